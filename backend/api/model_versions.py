"""Model versions over HTTP: list them, promote one, roll back to the one active before, through the console's
service functions (backend/training/versions.py), which hold the promotion rules: the promotion guard (enough
held-out reviewed images, a false-positive rate no worse than the active version's) refuses with 409
``promotion_refused`` unless the body's ``reason`` says why to go ahead anyway (recorded, audited)."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import String
from apiflask.validators import Length

from backend.api.auth import auth, current_actor
from backend.api.context import app_settings, db
from backend.shapes import ModelVersionList, ModelVersionOut, error_doc
from backend.storage.schema import ModelVersion
from backend.training.versions import list_versions, promote_version, roll_back
from core.enums import Permission

bp = APIBlueprint("model_versions", __name__, url_prefix="/api/v1/model-versions", tag="Model versions")


class PromoteIn(Schema):
    reason = String(load_default=None, allow_none=True, validate=Length(max=500),
                    metadata={"description": "Why to promote although the promotion guard refuses (at least 10 "
                                             "characters; kept with the activation and in the audit trail)."})


@bp.get("")
@bp.auth_required(auth)
@bp.output(ModelVersionList)
@bp.doc(summary="List model versions, newest first; one is active", responses=error_doc(403))
def read_versions() -> dict[str, Any]:
    current_actor(Permission.READ_ALL)
    return {"versions": list_versions(db())}


@bp.post("/<int:version_id>/promote")
@bp.auth_required(auth)
@bp.input(PromoteIn, arg_name="body")
@bp.output(ModelVersionOut, description="Now the active version; workers switch before their next chunk")
@bp.doc(summary="Make a version the active one, through the promotion guard", responses=error_doc(400, 403, 409))
def promote(version_id: int, body: dict[str, Any]) -> ModelVersion:
    actor = current_actor(Permission.PROMOTE)
    session = db()
    version = promote_version(session, version_id, app_settings(), actor=actor,
                              override_reason=body.get("reason"))
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
