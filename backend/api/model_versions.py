"""Model versions over HTTP: list them, promote one, roll back to the one active before, through the console's
service functions (backend/model_versions.py), which hold the promotion rules."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint

from backend.api.auth import auth, current_actor
from backend.api.context import db
from backend.model_versions import list_versions, promote_version, roll_back
from backend.schema import ModelVersion
from backend.shapes import ModelVersionList, ModelVersionOut, error_doc
from core.enums import Permission

bp = APIBlueprint("model_versions", __name__, url_prefix="/api/v1/model-versions", tag="Model versions")


@bp.get("")
@bp.auth_required(auth)
@bp.output(ModelVersionList)
@bp.doc(summary="List model versions, newest first; one is active", responses=error_doc(403))
def read_versions() -> dict[str, Any]:
    current_actor(Permission.READ_ALL)
    return {"versions": list_versions(db())}


@bp.post("/<int:version_id>/promote")
@bp.auth_required(auth)
@bp.output(ModelVersionOut, description="Now the active version; workers switch before their next chunk")
@bp.doc(summary="Make a version the active one", responses=error_doc(403, 409))
def promote(version_id: int) -> ModelVersion:
    session = db()
    version = promote_version(session, version_id, actor=current_actor(Permission.PROMOTE))
    session.commit()
    return version


@bp.post("/rollback")
@bp.auth_required(auth)
@bp.output(ModelVersionOut, description="The version active before the current one, active again")
@bp.doc(summary="Roll back to the previously active version", responses=error_doc(403, 409))
def rollback() -> ModelVersion:
    session = db()
    version = roll_back(session, actor=current_actor(Permission.PROMOTE))
    session.commit()
    return version
