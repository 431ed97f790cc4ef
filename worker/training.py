"""A training run, as the training worker executes it: claim the run, train its candidate in a process of its own
(worker/candidate.py), end that process within seconds when the run is cancelled, and register what it staged.

Everything is written under ``models_dir/.staging/<run id>/`` and moved into place with one rename only once the
run has succeeded, so a failed or cancelled run leaves no half-written model and changes nothing active. The
worker's own process never imports TensorFlow: the trainer's memory goes back to the machine when it exits."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.schema import TrainingRun
from backend.storage.store import MODELS, open_store
from backend.training.runs import cancelled_by, claim_run, end_run, finish_run
from core.enums import RunStatus
from core.retraining import Comparison, RunResult
from worker.candidate import ERROR_FILE, EXIT_CANCELLED, RESULT_FILE
from worker.children import end_with_parent

log = logging.getLogger("fakewatch.training")

UNCHANGED = "Nothing was registered; the active model is unchanged."
# How often the worker reads the run's cancel flag while the trainer works (loading data, compiling, training,
# comparing alike), and how long the trainer has to end after SIGTERM before it is killed.
WATCH_S = 0.5
STOP_GRACE_S = 3.0
Trainer = Callable[[str, Settings, Path], None]


class RunCancelled(Exception):
    """The run's cancel flag was set while the trainer worked."""


class TrainerFailed(Exception):
    """The trainer ended without a candidate; the message is the run's reason."""


def train_model(run_id: str, settings: Settings, trainer: Trainer | None = None) -> RunResult:
    """Execute one training run to its end: done (a candidate registered), failed or cancelled, with the reason.
    ``trainer``: what trains the candidate into the staging folder (default: worker/candidate.py in a process of
    its own, watched for cancellation)."""
    with session_scope(settings) as session:
        if claim_run(session, run_id) is None:
            return RunResult(run_id, "not claimed")
    staging = settings.models_dir / ".staging" / run_id
    try:
        (trainer or train_in_subprocess)(run_id, settings, staging)
        if _cancel_requested(settings, run_id):
            raise RunCancelled(run_id)
        version_name = _register(run_id, staging, settings)
    except RunCancelled:
        with session_scope(settings) as session:
            who = cancelled_by(session, run_id) or "someone"
        _end(settings, run_id, RunStatus.CANCELLED, f"Cancelled by {who}. {UNCHANGED}")
        return RunResult(run_id, RunStatus.CANCELLED)
    except Exception as error:  # whatever went wrong is the run's reason, shown in the console
        log.exception("training run %s failed", run_id)
        reason = str(error) if isinstance(error, TrainerFailed) else f"{type(error).__name__}: {error}"
        _end(settings, run_id, RunStatus.FAILED, f"{reason}. {UNCHANGED}")
        return RunResult(run_id, RunStatus.FAILED)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RunResult(run_id, RunStatus.DONE, version_name)


def train_here(run_id: str, settings: Settings, staging: Path) -> None:
    """The trainer in this process (what the trainer process runs): a cancel seen between batches is RunCancelled."""
    from models.train import TrainingCancelled  # noqa: PLC0415 - TensorFlow
    from worker.candidate import train_candidate  # noqa: PLC0415

    try:
        train_candidate(run_id, settings, staging)
    except TrainingCancelled as cancelled:
        raise RunCancelled(run_id) from cancelled


def train_in_subprocess(run_id: str, settings: Settings, staging: Path) -> None:
    """Run worker/candidate.py for this run and wait for it, reading the cancel flag every WATCH_S: a cancelled
    run's trainer is ended at once, whatever it is doing (loading images, building the graph, between steps)."""
    trainer = subprocess.Popen([sys.executable, "-m", "worker.candidate", run_id], stdin=subprocess.PIPE,
                               preexec_fn=end_with_parent)
    try:
        assert trainer.stdin is not None
        trainer.stdin.write(settings.model_dump_json().encode())
        trainer.stdin.close()
        while trainer.poll() is None:
            if _cancel_requested(settings, run_id):
                _stop(trainer)
                raise RunCancelled(run_id)
            time.sleep(WATCH_S)
    finally:
        _stop(trainer)  # a worker shutting down, or a time limit reached, takes the trainer with it
    if trainer.returncode == EXIT_CANCELLED:
        raise RunCancelled(run_id)
    if trainer.returncode != 0:
        raise TrainerFailed(_failure_reason(staging, trainer.returncode))


def _failure_reason(staging: Path, returncode: int) -> str:
    error_file = staging / ERROR_FILE
    if error_file.is_file():
        return error_file.read_text(errors="replace").strip()
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"The training process was killed by {name}{hint}"
    return f"The training process exited with status {returncode}; see the training worker's log"


def _stop(trainer: subprocess.Popen[bytes]) -> None:
    if trainer.poll() is not None:
        return
    trainer.terminate()
    try:
        trainer.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        trainer.kill()
        trainer.wait()


def _cancel_requested(settings: Settings, run_id: str) -> bool:
    with session_scope(settings) as session:
        return bool(session.scalar(select(TrainingRun.cancel_requested).where(TrainingRun.id == run_id)))


def _register(run_id: str, staging: Path, settings: Settings) -> str:
    """Move the staged candidate into place (one rename) and register it with its comparison."""
    result = json.loads((staging / RESULT_FILE).read_text())
    (staging / RESULT_FILE).unlink()
    final_dir = settings.models_dir / result["name"]
    os.rename(staging, final_dir)  # one atomic step: the version's files appear together or not at all
    try:
        with session_scope(settings) as session:
            return finish_run(session, run_id, final_dir / result["model_file"], Comparison.from_dict(result["comparison"]),
                              store=open_store(settings, MODELS)).name
    except BaseException:
        shutil.rmtree(final_dir, ignore_errors=True)
        raise


def _end(settings: Settings, run_id: str, status: RunStatus, reason: str) -> None:
    with session_scope(settings) as session:
        end_run(session, run_id, status, reason)
