"""Training runs over HTTP, for `fakewatch retrain` and scripts: start one, follow it, cancel it.

Promotion and roll-back are deliberately not here: an API key (held by browser extensions and scripts) may
produce a candidate, but only a moderator in the console decides what becomes active."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Boolean, Integer
from apiflask.validators import Range
from flask import url_for

from backend.api.auth import auth
from backend.api.session import db
from backend.training import cancel_run, get_run, list_runs, run_to_dict, start_training

bp = APIBlueprint("training", __name__, url_prefix="/api/v1/training-runs", tag="Training")


class TrainingRequest(Schema):
    from_scratch = Boolean(load_default=False,
                           metadata={"description": "Train a new model instead of fine-tuning the active version."})
    epochs = Integer(load_default=None, allow_none=True, validate=Range(min=1),
                     metadata={"description": "Epochs (default: FAKEWATCH_TRAINING_EPOCHS)."})


@bp.post("")
@bp.auth_required(auth)
@bp.input(TrainingRequest, arg_name="body")
@bp.doc(summary="Start a training run", responses={202: "Queued", 409: "Another run is queued or running"})
def create_run(body: dict[str, Any]):  # type: ignore[no-untyped-def]
    session = db()
    run = start_training(session, from_scratch=body["from_scratch"], epochs=body.get("epochs"),
                         requested_by=f"API key {auth.current_user.name}")
    return run_to_dict(session, run), 202, {"Location": url_for("training.read_run", run_id=run.id)}


@bp.get("")
@bp.auth_required(auth)
@bp.doc(summary="List recent training runs, newest first")
def read_runs():  # type: ignore[no-untyped-def]
    session = db()
    return {"runs": [run_to_dict(session, run) for run in list_runs(session)]}


@bp.get("/<run_id>")
@bp.auth_required(auth)
@bp.doc(summary="Read a training run: status, epoch, metrics history, candidate and comparison")
def read_run(run_id: str):  # type: ignore[no-untyped-def]
    session = db()
    return run_to_dict(session, get_run(session, run_id))


@bp.post("/<run_id>/cancel")
@bp.auth_required(auth)
@bp.doc(summary="Cancel a queued run, or ask a running one to stop")
def cancel(run_id: str):  # type: ignore[no-untyped-def]
    session = db()
    run = cancel_run(session, run_id)
    session.commit()
    return run_to_dict(session, run)
