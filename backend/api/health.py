"""GET /healthz (the process is alive) and GET /readyz (database, broker and an active model; with a key, also the
scoring workers that can score now)."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from sqlalchemy import text

from backend.api.auth import bearer_token, verified_key
from backend.api.context import app_settings, db, set_retry_after
from backend.api.errors import RETRY_AFTER_S
from backend.checks.dispatch import broker_reachable
from backend.checks.workers import workers_state
from backend.shapes import HealthOut, ReadyOut, response_doc
from backend.training.versions import active_version

bp = APIBlueprint("health", __name__, tag="Health")


@bp.get("/healthz")
@bp.output(HealthOut)
@bp.doc(summary="Liveness")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/readyz")
@bp.output(ReadyOut, description="Ready (200), or not ready (503); the reasons and the model version only to a "
                                 "request with a valid API key")
@bp.doc(summary="Readiness: database and broker reachable, an active model exists",
        responses=response_doc(503, "Not ready (and why, with a key)", ["application/json"], ReadyOut))
def readyz() -> tuple[dict[str, Any], int]:
    """A load balancer's probe needs only the status; the reasons (error texts naming hosts) and the model version
    are for an operator, who sends a key."""
    problems: dict[str, str] = {}
    try:
        db().execute(text("SELECT 1"))
        version = active_version(db())
        if version is None:
            problems["model"] = "no active model version: run `fakewatch db upgrade` or promote one in the console"
    except Exception as error:  # noqa: BLE001 - any failure is the reason it is not ready
        problems["database"] = f"database unreachable: {error}"
        version = None
    broker_problem = broker_reachable(app_settings())
    if broker_problem:
        problems["broker"] = broker_problem
    status = 200 if not problems else 503
    if problems:
        set_retry_after(RETRY_AFTER_S)  # as every other 503: when to ask again
    body: dict[str, Any] = {"status": "ready" if not problems else "not_ready"}
    if "database" not in problems and verified_key(bearer_token()) is not None:
        # The workers' state informs an operator; it does not decide the API's readiness (scaled to zero is fine).
        workers = workers_state(db(), version.name if version else None)
        body.update(problems=problems, model_version=version.name if version else None, workers=workers.to_dict())
    return body, status
