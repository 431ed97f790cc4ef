"""Training runs over HTTP, for `fakewatch retrain` and scripts: start one, follow it, cancel it.

Starting and cancelling a run needs a moderator's or admin's key (backend/identity/access.py); a submitter key reads only the
runs it requested, which is none. Promotion and roll-back are not here but in backend/api/model_versions.py (an
admin's action): a run only produces a candidate."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Boolean, Integer
from apiflask.validators import Range
from flask import url_for

from backend.api.auth import auth, current_actor
from backend.api.context import app_settings, db
from backend.shapes import ErrorOut, RunList, RunOut, error_doc, response_doc
from backend.storage.schema import TrainingRun
from backend.training.runs import cancel_run, get_run, list_runs, start_training
from core.enums import Permission

bp = APIBlueprint("training", __name__, url_prefix="/api/v1/training-runs", tag="Training")


class TrainingRequest(Schema):
    from_scratch = Boolean(load_default=False,
                           metadata={"description": "Train a new model instead of fine-tuning the active version."})
    epochs = Integer(load_default=None, allow_none=True, validate=Range(min=1),
                     metadata={"description": "Epochs (default: FAKEWATCH_TRAINING_EPOCHS)."})


@bp.post("")
@bp.auth_required(auth)
@bp.input(TrainingRequest, arg_name="body")
@bp.output(RunOut, status_code=202, description="Queued")
@bp.doc(summary="Start a training run", responses={
    **error_doc(400, 403, 413, 503),
    **response_doc(409, "Another run is queued or running, or nothing to train on", ["application/json"], ErrorOut)})
def create_run(body: dict[str, Any]) -> tuple[TrainingRun, int, dict[str, str]]:
    run = start_training(db(), app_settings(), actor=current_actor(Permission.TRAIN), from_scratch=body["from_scratch"],
                         epochs=body.get("epochs"))
    return run, 202, {"Location": url_for("training.read_run", run_id=run.id)}


@bp.get("")
@bp.auth_required(auth)
@bp.output(RunList)
@bp.doc(summary="List recent training runs, newest first")
def read_runs() -> dict[str, list[TrainingRun]]:
    return {"runs": list_runs(db(), actor=current_actor())}


@bp.get("/<run_id>")
@bp.auth_required(auth)
@bp.output(RunOut)
@bp.doc(summary="Read a training run: status, epoch, metrics history, candidate and comparison")
def read_run(run_id: str) -> TrainingRun:
    return get_run(db(), run_id, current_actor())


@bp.post("/<run_id>/cancel")
@bp.auth_required(auth)
@bp.output(RunOut)
@bp.doc(summary="Cancel a queued run, or ask a running one to stop", responses=error_doc(403, 409))
def cancel(run_id: str) -> TrainingRun:
    session = db()
    run = cancel_run(session, run_id, actor=current_actor())
    session.commit()
    return run
