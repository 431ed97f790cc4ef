"""Retraining from moderators' labels (issue 7): the services on their own, then end to end with a real API, a real
scoring worker and a real training worker on a tiny generated dataset."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image as PILImage
from sqlalchemy import select

import backend.training.data
import backend.training.runs
from admin.curves import curve_chart, history_frame
from backend.checks.service import store_image
from backend.moderation.reviews import label_images
from backend.settings import Settings
from backend.shapes import RunOut
from backend.storage.db import session_scope
from backend.storage.schema import AuditEvent, Check, Image, ModelActivation, ModelVersion, Review, TrainingRun
from backend.training.data import assemble_training_data, base_datasets, is_heldout
from backend.training.rescoring import rescore_flagged
from backend.training.runs import cancel_run, claim_run, finish_run, get_run, request_training, start_training
from backend.training.versions import (
    active_version,
    check_promotion,
    promote_version,
    register_model,
    roll_back,
    rollback_candidates,
)
from core.enums import AuditAction, Label, Role
from core.errors import FakewatchError
from core.retraining import HELDOUT_SET, ComparedSet, Comparison
from testbed.images import LocalServer, photo_bytes
from testbed.stack import Stack, isolated_settings
from tests.actors import OPERATOR, as_user
from tests.fixtures_models import write_tiny_dataset
from tests.test_admin import MODERATOR, add_moderator, logged_in, press, texts
from worker.candidate import RunMonitor
from worker.training import train_here, train_model

ANN = as_user("ann", Role.ADMIN)


def unique_png(seed: int | None = None) -> bytes:
    """An image no test has submitted before, so its check is scored afresh (never answered from the cache)."""
    rng = np.random.default_rng(seed if seed is not None else uuid.uuid4().int % 2**32)
    pixels = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


# --- services, on a fresh database in this process ---------------------------------------------------------


@pytest.fixture
def services_db(any_database: Settings) -> Settings:
    """A fresh database on each backend, trained on reviewed images only (never the shipped model's datasets)."""
    return any_database.model_copy(update={"training_datasets": ("none",)})


def _review(session: Any, settings: Settings, data: bytes, label: str, reviewer: str = "mod") -> Image:
    image = store_image(session, data, settings)
    session.add(Review(image_id=image.id, label=label, reviewer=reviewer))
    session.flush()
    return image


def _fake_version(models_dir: Path, name: str) -> Path:
    """A registrable version (file + metadata); the services never load it, so its bytes need not be a model."""
    folder = models_dir / name
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(name.encode())
    (folder / "model.json").write_text(json.dumps({"name": name, "threshold": 0.5, "band": 0.1}))
    return folder / "model.keras"


def test_heldout_split_is_by_hash_and_latest_label_wins(services_db: Settings) -> None:
    hashes = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(2000)]
    share = sum(is_heldout(digest, 20) for digest in hashes) / len(hashes)
    assert 0.16 < share < 0.24
    assert [is_heldout(digest, 20) for digest in hashes] == [is_heldout(digest, 20) for digest in hashes]
    with session_scope(services_db) as session:
        images = [_review(session, services_db, unique_png(seed), "real") for seed in range(40)]
        _review(session, services_db, unique_png(0), "fake")  # a later review relabels image 0
        unreviewed = store_image(session, unique_png(1000), services_db)  # checked, never labelled: left out
        first = assemble_training_data(session, services_db)
        second = assemble_training_data(session, services_db)
    assert first.train == second.train and first.heldout == second.heldout
    assert len(first.train) + len(first.heldout) == 40
    labels = {path.name: label for path, label in first.train + first.heldout}
    assert labels[Path(images[0].storage_key).name] == Label.FAKE.target == 1
    assert Path(unreviewed.storage_key).name not in labels
    assert labels[Path(images[2].storage_key).name] == Label.REAL.target == 0
    expected_heldout = {Path(image.storage_key).name for image in images[1:] if is_heldout(image.sha256, 20)}
    expected_heldout |= {Path(images[0].storage_key).name} if is_heldout(images[0].sha256, 20) else set()
    assert {path.name for path, _ in first.heldout} == expected_heldout and expected_heldout
    assert all(path.is_file() for path, _ in first.train)


def test_base_datasets_default_to_the_shipped_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    present, missing = tmp_path / "present", tmp_path / "missing"
    present.mkdir()
    shipped = tmp_path / "shipped" / "default.keras"
    shipped.parent.mkdir()
    shipped.with_suffix(".json").write_text(json.dumps({"training_data": {"datasets": [str(present), str(missing)]}}))
    monkeypatch.setattr(backend.training.data, "SHIPPED_MODEL", shipped)
    assert base_datasets(isolated_settings()) == [present]
    assert base_datasets(isolated_settings(training_datasets=f"{missing},{tmp_path}")) == [tmp_path]
    assert base_datasets(isolated_settings(training_datasets="none")) == []
    shipped.with_suffix(".json").unlink()
    assert base_datasets(isolated_settings()) == []


def test_one_run_at_a_time_and_cancel_before_start(services_db: Settings) -> None:
    with session_scope(services_db) as session:
        register_model(session, _fake_version(services_db.models_dir, "v1"), activate=True)
        with pytest.raises(FakewatchError) as nothing:
            request_training(session, services_db, actor=as_user())
        assert nothing.value.code == "no_training_data"
        for seed in range(6):
            _review(session, services_db, unique_png(100 + seed), "fake" if seed % 2 else "real")
        with pytest.raises(FakewatchError) as bad_epochs:
            request_training(session, services_db, actor=as_user(), epochs=10_000)
        assert bad_epochs.value.code == "invalid_request"
        first = request_training(session, services_db, actor=as_user("alice"), epochs=2)
        assert first.status == "queued" and first.params["base_version_id"] is not None
        with pytest.raises(FakewatchError) as busy:
            request_training(session, services_db, actor=as_user("bob"))
        assert busy.value.code == "training_busy" and busy.value.status == 409
        assert first.id in busy.value.message and "alice" in busy.value.message
        assert cancel_run(session, first.id, actor=as_user()).status == "cancelled"
        with pytest.raises(FakewatchError) as ended:
            cancel_run(session, first.id, actor=as_user())
        assert ended.value.code == "not_cancellable"
        second = request_training(session, services_db, actor=as_user(), from_scratch=True, epochs=1)
        assert second.params["from_scratch"] is True and second.params["base_version_id"] is None


def test_racing_requests_start_one_run(services_db: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two requests that both pass the service's check (a race): the database's unique index refuses the second."""
    with session_scope(services_db) as session:
        register_model(session, _fake_version(services_db.models_dir, "v1"), activate=True)
        for seed in range(4):
            _review(session, services_db, unique_png(200 + seed), "fake" if seed % 2 else "real")
        request_training(session, services_db, actor=as_user("alice"), epochs=1)
    monkeypatch.setattr(backend.training.runs, "current_run", lambda _session: None)
    with session_scope(services_db) as session:
        with pytest.raises(FakewatchError) as busy:
            request_training(session, services_db, actor=as_user("bob"), epochs=1)
        assert busy.value.code == "training_busy"
    with session_scope(services_db) as session:
        assert len(list(session.scalars(select(TrainingRun)))) == 1


def test_silent_running_run_is_expired_so_it_does_not_block(services_db: Settings) -> None:
    services_db = services_db.model_copy(update={"training_stale_after_s": 0.5})
    with session_scope(services_db) as session:
        for seed in range(4):
            _review(session, services_db, unique_png(200 + seed), "fake" if seed % 2 else "real")
        run = request_training(session, services_db, actor=as_user(), from_scratch=True)
        assert claim_run(session, run.id) is not None
        assert claim_run(session, run.id) is None  # a redelivered message does not start it twice
        with pytest.raises(FakewatchError):
            request_training(session, services_db, actor=as_user(), from_scratch=True)
        time.sleep(0.7)
        again = request_training(session, services_db, actor=as_user(), from_scratch=True)
        session.refresh(run)
    assert run.status == "failed" and "stopped reporting" in (run.error or "")
    assert again.status == "queued"


def test_roll_back_reactivates_the_previous_version(services_db: Settings) -> None:
    models_dir = services_db.models_dir
    with session_scope(services_db) as session:
        with pytest.raises(FakewatchError) as nothing:
            roll_back(session, actor=OPERATOR)
        assert nothing.value.code == "nothing_to_roll_back"
        one = register_model(session, _fake_version(models_dir, "one"), activate=True)
        two = register_model(session, _fake_version(models_dir, "two"))
        three = register_model(session, _fake_version(models_dir, "three"))
        assert not two.active and not three.active  # registered, never active by itself
        override = "tests: no comparison to guard on"
        promote_version(session, two.id, services_db, actor=OPERATOR, override_reason=override)
        promote_version(session, three.id, services_db, actor=OPERATOR, override_reason=override)
        assert roll_back(session, actor=OPERATOR).name == "two"
        assert roll_back(session, actor=OPERATOR).name == "three"  # rolling back a roll-back returns to where we were
        assert roll_back(session, one.id, actor=OPERATOR).name == "one"
        assert active_version(session).name == "one"  # type: ignore[union-attr]
        assert session.scalar(select(ModelVersion).where(ModelVersion.active.is_(True)).limit(2)) is not None
        assert len(list(session.scalars(select(ModelVersion).where(ModelVersion.active.is_(True))))) == 1
        Path(three.file).unlink()
        with pytest.raises(FakewatchError) as missing:
            promote_version(session, three.id, services_db, actor=OPERATOR, override_reason=override)
        assert missing.value.code == "invalid_model"


def _candidate_with_comparison(session: Any, settings: Settings, name: str, *, heldout: int, active_fpr: float,
                               candidate_fpr: float, against: str) -> ModelVersion:
    """A finished run that registered ``name`` with a held-out comparison of these figures against ``against``."""
    def metrics(fpr: float) -> dict[str, Any]:
        return {"roc_auc": 0.9, "accuracy": 0.8, "fpr_at_threshold": fpr,
                "counts": {"real": heldout // 2, "fake": heldout - heldout // 2, "total": heldout}}
    comparison = Comparison(active_version=against, candidate_version=name, measured_at="", sets=(
        ComparedSet(name=HELDOUT_SET, count=heldout, active=metrics(active_fpr), candidate=metrics(candidate_fpr)),))
    run = TrainingRun(status="queued", params={}, progress={})
    session.add(run)
    session.flush()
    claim_run(session, run.id)
    return finish_run(session, run.id, _fake_version(settings.models_dir, name), comparison)


def test_promotion_guard_refuses_small_or_worse_candidates_unless_overridden(services_db: Settings) -> None:
    with session_scope(services_db) as session:
        shipped = register_model(session, _fake_version(services_db.models_dir, "shipped"), activate=True)
        tiny = _candidate_with_comparison(session, services_db, "tiny", heldout=3, active_fpr=0.2, candidate_fpr=0.0,
                                          against="shipped")
        worse = _candidate_with_comparison(session, services_db, "worse", heldout=80, active_fpr=0.05,
                                           candidate_fpr=0.10, against="shipped")
        good = _candidate_with_comparison(session, services_db, "good", heldout=80, active_fpr=0.05,
                                          candidate_fpr=0.05, against="shipped")
        stale = _candidate_with_comparison(session, services_db, "stale", heldout=80, active_fpr=0.05,
                                           candidate_fpr=0.01, against="some-older-version")
        assert services_db.promotion_min_heldout == 50
        for version, words in ((tiny, "Only 3 held-out reviewed image(s)"), (worse, "worse: 10.0% against 5.0%"),
                               (stale, "never measured against the active version shipped")):
            with pytest.raises(FakewatchError) as refused:
                promote_version(session, version.id, services_db, actor=ANN)
            assert refused.value.code == "promotion_refused" and words in refused.value.message
            assert refused.value.status == 409
            assert active_version(session).name == "shipped"  # type: ignore[union-attr]
        with pytest.raises(FakewatchError) as too_short:
            promote_version(session, tiny.id, services_db, actor=ANN, override_reason="ok")
        assert too_short.value.code == "invalid_request"
        with pytest.raises(FakewatchError) as not_admin:  # overriding is promoting: an admin's act
            promote_version(session, worse.id, services_db, actor=as_user("mo", Role.MODERATOR),
                            override_reason="a moderator wants this one")
        assert not_admin.value.status == 403
        assert check_promotion(session, good.id, services_db).allowed
        assert promote_version(session, good.id, services_db, actor=ANN).active
        lowered = services_db.model_copy(update={"promotion_min_heldout": 3})
        assert check_promotion(session, tiny.id, lowered).refusals[0].startswith("tiny was never measured")
        roll_back(session, shipped.id, actor=ANN)
        assert check_promotion(session, tiny.id, lowered).allowed  # 3 images suffice where the setting says so
        promote_version(session, worse.id, services_db, actor=as_user("root", Role.ADMIN),
                        override_reason="incident 42: new generator wave")
        activations = list(session.scalars(select(ModelActivation).order_by(ModelActivation.id)))
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.object_type == "model_version")
                                      .order_by(AuditEvent.id)))
    # The audit trail has the same three acts, the override's reason in the promotion's ``after``.
    assert [(e.action, e.actor_name) for e in events] == [
        (AuditAction.PROMOTE, "ann"), (AuditAction.ROLL_BACK, "ann"), (AuditAction.PROMOTE, "root")]
    assert (events[-1].after or {})["override_reason"] == "incident 42: new generator wave"
    assert "worse" in ((events[-1].after or {})["refusal"] or "")
    assert (events[0].after or {}).get("override_reason") is None
    assert [(a.kind, a.by, a.override_reason) for a in activations] == [
        ("promote", "ann", None), ("roll_back", "ann", None), ("promote", "root", "incident 42: new generator wave")]
    assert "worse" in (activations[-1].refusal or "")


def test_roll_back_lists_only_versions_that_were_active_newest_first(services_db: Settings) -> None:
    with session_scope(services_db) as session:
        one = register_model(session, _fake_version(services_db.models_dir, "one"), activate=True)
        two = register_model(session, _fake_version(services_db.models_dir, "two"))
        never = register_model(session, _fake_version(services_db.models_dir, "never-active"))
        assert rollback_candidates(session) == []
        promote_version(session, two.id, services_db, actor=OPERATOR, override_reason="tests: no comparison here")
        assert [v.name for v in rollback_candidates(session)] == ["one"]
        with pytest.raises(FakewatchError) as refused:
            roll_back(session, never.id, actor=OPERATOR)
        assert refused.value.code == "not_previously_active" and active_version(session).id == two.id  # type: ignore[union-attr]
        roll_back(session, one.id, actor=OPERATOR)
        assert [v.name for v in rollback_candidates(session)] == ["two"]


# --- end to end: real API, scoring worker and training worker ---------------------------------------------


@pytest.fixture(scope="module")
def training_stack(embedded_stack: Stack, tiny_dataset: Path) -> Iterator[Stack]:
    """The embedded stack with a training worker; the tiny dataset is the base dataset (never the real data)."""
    embedded_stack.env["FAKEWATCH_TRAINING_DATASETS"] = str(tiny_dataset)
    embedded_stack.start_worker("training-worker", "--queues", "training", warm=False)
    try:
        yield embedded_stack
    finally:
        embedded_stack.stop_process("training-worker")
        embedded_stack.env.pop("FAKEWATCH_TRAINING_DATASETS", None)


@pytest.fixture(scope="module")
def reviewed(training_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> int:
    """Checks submitted through the API and labelled by a moderator: 12 real and 12 fake images."""
    root = write_tiny_dataset(tmp_path_factory.mktemp("reviewed"), seed=7)
    ids = []
    for label in ("real", "fake"):
        for path in sorted((root / "train" / label).iterdir())[:12]:
            response = training_stack.post_image(path.read_bytes(), wait=0)
            assert response.status_code in (200, 202), response.text
            ids.append((response.json()["id"], label))
    with training_stack.session() as session:
        for label in ("real", "fake"):
            checks = [session.get(Check, check_id) for check_id, item_label in ids if item_label == label]
            label_images(session, [check.image_id for check in checks if check is not None and check.image_id],
                         label, as_user())
    return len(ids)


def _wait_for_run(settings: Settings, run_id: str, timeout: float = 300,
                  until: tuple[str, ...] = ("done", "failed", "cancelled")) -> TrainingRun:
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(settings) as session:
            run = get_run(session, run_id)
            if run.status in until or time.monotonic() > deadline:
                return run
        time.sleep(0.3)


def _model_files(models_dir: Path) -> set[str]:
    return {str(path.relative_to(models_dir)) for path in models_dir.rglob("*") if path.is_file()} if models_dir.exists() else set()


def test_retrain_promote_then_roll_back_without_restarting_the_scorer(training_stack: Stack, reviewed: int) -> None:
    settings = training_stack.settings
    scorer = training_stack.processes["worker"]
    with session_scope(settings) as session:
        old = active_version(session)
        assert old is not None
        run = start_training(session, settings, actor=as_user(), epochs=2)  # what the console's button calls
        assert run.params["data"]["reviewed_train"]["real"] + run.params["data"]["reviewed_heldout"]["real"] == 12
    run = _wait_for_run(settings, run.id)
    assert run.status == "done", run.error
    assert_training_worker_gave_memory_back(training_stack)
    with session_scope(settings) as session:
        body = RunOut().dump(get_run(session, run.id))
        candidate = session.get(ModelVersion, run.model_version_id)
        assert candidate is not None and not candidate.active and active_version(session).id == old.id  # type: ignore[union-attr]
    assert [entry["epoch"] for entry in body["history"]] == [1, 2] and "val_loss" in body["history"][0]
    assert body["candidate"]["name"] == candidate.name and Path(candidate.file).is_file()
    assert Path(candidate.file).parent.parent == settings.models_dir
    assert not (settings.models_dir / ".staging" / run.id).exists()
    sets = {part["name"]: part for part in body["comparison"]["sets"]}
    heldout = sets["held-out reviewed images"]
    assert heldout["count"] == sum(run.params["data"]["reviewed_heldout"].values()) > 0
    for side in ("active", "candidate"):
        assert 0.0 <= heldout[side]["accuracy"] <= 1.0
    assert any(name.endswith("valid (used for model selection)") for name in sets)
    assert body["comparison"]["active_version"] == old.name
    assert candidate.metrics.get("valid") and candidate.sha256 and candidate.details["name"] == candidate.name

    try:
        with session_scope(settings) as session:
            with pytest.raises(FakewatchError) as refused:  # 24 reviews hold out a handful: too few to trust
                promote_version(session, candidate.id, settings, actor=OPERATOR)
            assert refused.value.code == "promotion_refused"
            promote_version(session, candidate.id, settings, actor=OPERATOR,
                            override_reason="tests: a tiny model on tiny data")
        fresh = training_stack.post_image(unique_png(), wait=10).json()
        assert fresh["status"] == "done" and fresh["model_version"] == candidate.name and fresh["cached"] is False
        _rescore_flagged_with(settings, candidate)
    finally:
        with session_scope(settings) as session:
            assert roll_back(session, actor=OPERATOR).name == old.name
    again = training_stack.post_image(unique_png(), wait=10).json()
    assert again["status"] == "done" and again["model_version"] == old.name and again["cached"] is False
    assert scorer.poll() is None and training_stack.processes["worker"] is scorer  # the same scoring process throughout


def _rescore_flagged_with(settings: Settings, candidate: ModelVersion) -> None:
    with session_scope(settings) as session:
        flagged = set(session.scalars(select(Check.image_id).where(Check.flagged.is_(True), Check.status == "done")))
        batch = rescore_flagged(session, settings, requested_by="moderator")
    if not flagged:
        assert batch is None
        return
    assert batch is not None and batch.total == len(flagged)
    deadline = time.monotonic() + 90
    while True:
        with session_scope(settings) as session:
            items = list(session.scalars(select(Check).where(Check.batch_id == batch.id)))
        if all(item.status == "done" for item in items) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert {item.image_id for item in items} == flagged
    assert {(item.status, item.model_version_id) for item in items} == {("done", candidate.id)}


def test_running_run_is_cancelled_within_seconds_and_leaves_nothing(training_stack: Stack, reviewed: int) -> None:
    """Cancelled as soon as it runs (loading its data, building its graph): the trainer is ended within seconds,
    not after loading and an epoch, and the reason names who cancelled it."""
    settings = training_stack.settings
    models_before = _model_files(settings.models_dir)
    with session_scope(settings) as session:
        versions_before = len(list(session.scalars(select(ModelVersion))))
        run = start_training(session, settings, actor=as_user(), epochs=200)
    running = _wait_for_run(settings, run.id, until=("running",), timeout=60)
    assert running.status == "running"
    time.sleep(1.0)  # the trainer process has started and is loading
    with session_scope(settings) as session:
        cancel_run(session, run.id, actor=as_user("carol", Role.ADMIN))
    cancelled_at = time.monotonic()
    ended = _wait_for_run(settings, run.id, timeout=60)
    took = time.monotonic() - cancelled_at
    assert ended.status == "cancelled" and took < 8, (ended.status, took)
    assert (ended.error or "").startswith("Cancelled by carol.") and "unchanged" in (ended.error or "")
    assert ended.progress["epoch"] < 200
    with session_scope(settings) as session:
        assert len(list(session.scalars(select(ModelVersion)))) == versions_before
    assert _model_files(settings.models_dir) == models_before


def _process_tree(root: int) -> list[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            parents[int(pid)] = int(rest.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def _resident_and_tensorflow(pid: int) -> tuple[int, bool]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return 0, False
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return kib * 1024, "libtensorflow" in maps


def assert_training_worker_gave_memory_back(stack: Stack) -> None:
    """After a run the idle training worker (its main process and pool) holds under 1 GiB and no TensorFlow: the
    run's memory (6.8 GiB with the real datasets) went with the trainer's process."""
    tree = _process_tree(stack.processes["training-worker"].pid)
    measured = {pid: _resident_and_tensorflow(pid) for pid in tree}
    resident = sum(rss for rss, _ in measured.values())
    assert resident < 1024**3, f"the idle training worker holds {resident / 1024**2:.0f} MiB: {measured}"
    assert not any(tensorflow for _, tensorflow in measured.values()), f"TensorFlow stayed loaded: {measured}"


def test_run_that_raises_midway_changes_nothing_active(training_stack: Stack, reviewed: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settings = training_stack.settings
    """Real training in this process (the trainer's own code), made to fail after its first epoch (the checkpoint
    is already on disk)."""
    def broken_epoch(self: RunMonitor, epoch: int, metrics: dict[str, float]) -> None:
        staged = list((settings.models_dir / ".staging" / self.run_id).iterdir())
        assert staged, "the failure should happen with files half-written"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunMonitor, "on_epoch", broken_epoch)
    models_before = _model_files(settings.models_dir)
    with session_scope(settings) as session:
        active_before = active_version(session)
        versions_before = len(list(session.scalars(select(ModelVersion))))
        run = request_training(session, settings, actor=as_user(), epochs=3)
    result = train_model(run.id, settings, trainer=train_here)
    assert result.status == "failed"
    with session_scope(settings) as session:
        ended = session.get(TrainingRun, run.id)
        assert ended is not None and ended.status == "failed" and ended.model_version_id is None
        assert "No space left on device" in (ended.error or "") and "unchanged" in (ended.error or "")
        assert active_version(session).id == active_before.id  # type: ignore[union-attr]
        assert len(list(session.scalars(select(ModelVersion)))) == versions_before
    assert _model_files(settings.models_dir) == models_before


def test_a_trainer_process_that_fails_ends_the_run_with_its_reason(training_stack: Stack, reviewed: int) -> None:
    """The trainer process fails (its base version's file is not a model): the run ends failed with the trainer's
    own error as the reason, and its staging folder is gone."""
    settings = training_stack.settings
    with session_scope(settings) as session:
        broken = register_model(session, _fake_version(settings.models_dir, f"broken-{uuid.uuid4().hex[:6]}"),
                                activate=False)
        run = request_training(session, settings, actor=as_user(), epochs=1)
        run.params = {**run.params, "base_version_id": broken.id}
    models_before = _model_files(settings.models_dir)
    assert train_model(run.id, settings).status == "failed"
    with session_scope(settings) as session:
        ended = session.get(TrainingRun, run.id)
        assert ended is not None and ended.status == "failed" and "unchanged" in (ended.error or "")
        assert not (ended.error or "").startswith("The training process"), ended.error  # the trainer's own reason
    assert _model_files(settings.models_dir) == models_before
    assert not (settings.models_dir / ".staging" / run.id).exists()


def test_cli_retrain_through_the_api(training_stack: Stack, reviewed: int) -> None:
    env = {**os.environ, **training_stack.env, "FAKEWATCH_API_URL": training_stack.api_url,
           "FAKEWATCH_API_KEY": training_stack.api_key}
    started = requests.post(f"{training_stack.api_url}/api/v1/training-runs", headers=training_stack.headers(),
                            json={"epochs": 1}, timeout=30)
    assert started.status_code == 202, started.text
    busy = subprocess.run([sys.executable, "-m", "fakewatch.cli", "retrain", "--epochs", "1"], check=False, env=env,
                          capture_output=True, text=True, timeout=60)
    assert busy.returncode != 0 and "training_busy" in busy.stderr and started.json()["id"] in busy.stderr
    unauthenticated = requests.post(f"{training_stack.api_url}/api/v1/training-runs", json={}, timeout=30)
    assert unauthenticated.status_code == 401
    run_url = f"{training_stack.api_url}/api/v1/training-runs/{started.json()['id']}"
    deadline = time.monotonic() + 300
    while requests.get(run_url, headers=training_stack.headers(), timeout=30).json()["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    done = subprocess.run([sys.executable, "-m", "fakewatch.cli", "retrain", "--epochs", "1", "--wait"],
                          check=False, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "epoch 1/1" in done.stderr and "Candidate:" in done.stdout and "held-out reviewed images" in done.stdout
    assert "(1 epoch, fine-tuning" in done.stdout


def test_ctrl_c_on_retrain_wait_cancels_within_seconds_and_says_who(training_stack: Stack, reviewed: int) -> None:
    """Ctrl-C a few seconds into `retrain --wait`: the run ends cancelled within seconds (not after loading all
    data and an epoch), and the last line names the key that cancelled it."""
    env = {**os.environ, **training_stack.env, "FAKEWATCH_API_URL": training_stack.api_url,
           "FAKEWATCH_API_KEY": training_stack.api_key}
    retrain = subprocess.Popen([sys.executable, "-m", "fakewatch.cli", "retrain", "--epochs", "200", "--wait"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert retrain.stdout is not None and "(200 epochs," in retrain.stdout.readline()
        time.sleep(4)
        retrain.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        out, err = retrain.communicate(timeout=60)
        took = time.monotonic() - interrupted
    finally:
        if retrain.poll() is None:
            retrain.kill()
    assert retrain.returncode == 130 and took < 12, (retrain.returncode, took, err[-2000:])
    assert "cancelled: Cancelled by API key tests." in out, out + err[-2000:]


# Both commands follow their work for this long, polling across many of the server's keep-alive windows (once 2 s,
# now 75 s); the run has more epochs than fit, and is cancelled then, so the test is bounded whatever the speed.
FOLLOW_FOR_S = 100
FOLLOW_EPOCHS = 60


def test_retrain_and_scan_follow_for_minutes_without_losing_the_api(training_stack: Stack, reviewed: int,
                                                                     image_server: LocalServer) -> None:
    """`retrain --wait` (2 s polls) and back-to-back `scan --wait` runs (1 s polls) against the real gunicorn for
    about two minutes: every poll reuses a kept-alive connection, and not one of them reports the API unreachable.
    The run is cancelled through the API at the end, and `retrain --wait` follows it to that end."""
    env = {**os.environ, **training_stack.env, "FAKEWATCH_API_URL": training_stack.api_url,
           "FAKEWATCH_API_KEY": training_stack.api_key}
    photo = photo_bytes("coffee", size=128)

    def slow_image() -> tuple[int, dict[str, str], bytes]:
        time.sleep(1.0)  # a slow host: the batch takes a while, so the scan polls many times
        return 200, {"Content-Type": "image/jpeg"}, photo

    urls = [image_server.url(f"/follow/{index}.jpg") for index in range(40)]
    for url in urls:
        image_server.routes[url.split(str(image_server.port), 1)[1]] = slow_image
    listing = Path(training_stack.data_dir) / "follow-urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    started = time.monotonic()
    retrain = subprocess.Popen([sys.executable, "-m", "fakewatch.cli", "retrain", "--epochs", str(FOLLOW_EPOCHS),
                                "--wait"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scans = 0
    try:
        while time.monotonic() - started < FOLLOW_FOR_S:
            scan = subprocess.run([sys.executable, "-m", "fakewatch.cli", "scan", str(listing), "--wait"],
                                  env=env, capture_output=True, text=True, timeout=180, check=False)
            assert scan.returncode == 0, scan.stderr[-2000:]
            assert "Cannot reach" not in scan.stderr
            scans += 1
        runs = requests.get(f"{training_stack.api_url}/api/v1/training-runs", headers=training_stack.headers(),
                            timeout=30).json()["runs"]
        for run in runs:
            if run["status"] in ("queued", "running"):
                requests.post(f"{training_stack.api_url}/api/v1/training-runs/{run['id']}/cancel",
                              headers=training_stack.headers(), timeout=30)
        out, err = retrain.communicate(timeout=300)
    finally:
        if retrain.poll() is None:
            retrain.kill()
    assert "Cannot reach" not in err, err[-3000:]
    assert "epoch 1/" in err and ("Candidate:" in out or "cancelled" in out), (out + err)[-3000:]
    assert retrain.returncode == (0 if "Candidate:" in out else 1)
    assert scans >= 2 and time.monotonic() - started >= FOLLOW_FOR_S, "both commands followed their work for minutes"


# --- the console section, through AppTest ------------------------------------------------------------------




def test_console_compares_promotes_rolls_back_and_starts_a_run(services_db: Settings) -> None:
    models_dir = services_db.models_dir
    metrics = {"roc_auc": 0.8, "accuracy": 0.75, "fpr_at_threshold": 0.1}
    comparison = Comparison(active_version="v1", candidate_version="cand", measured_at="", sets=(
        ComparedSet(name=HELDOUT_SET, count=8, active=metrics,
                    candidate={**metrics, "roc_auc": 0.9, "fpr_at_threshold": 0.05,
                               "counts": {"real": 4, "fake": 4, "total": 8}}),))
    with session_scope(services_db) as session:
        register_model(session, _fake_version(models_dir, "v1"), activate=True)
        for seed in range(6):
            _review(session, services_db, unique_png(300 + seed), "fake" if seed % 2 else "real")
        run = request_training(session, services_db, actor=as_user(), epochs=1)
        claim_run(session, run.id)
        finish_run(session, run.id, _fake_version(models_dir, "cand"), comparison)

    at = logged_in(add_moderator(services_db, Role.ADMIN), "views/models.py")  # promoting is an admin's
    assert "Candidate vs active" in texts(at) and "Reviewed images: **3 real, 3 fake**" in texts(at)
    table = at.dataframe[-1].value
    assert table["metric"].tolist() == ["roc_auc", "accuracy", "fpr_at_threshold"]
    assert table["candidate"].tolist() == [0.9, 0.75, 0.05] and table["active"].tolist() == [0.8, 0.75, 0.1]
    assert table["change"].round(3).tolist() == [0.1, 0.0, -0.05]
    assert table["comparable"].tolist() == [False] * 3  # 8 held-out images
    assert table["candidate 95% CI"].tolist()[1] == "0.409 to 0.929"  # accuracy 6 of 8: Wilson's interval
    assert "Promotion is refused: Only 8 held-out reviewed image(s)" in texts(at)
    assert "No base dataset's validation split was measured" in texts(at)
    assert "retrain_rollback_choice" not in [box.key for box in at.selectbox]  # cand was never active: no roll-back to it
    press(at, "Promote cand anyway")
    assert "An admin can override with a typed reason." in texts(at)
    with session_scope(services_db) as session:
        assert active_version(session).name == "v1"  # type: ignore[union-attr]
    at.text_input(key="retrain_override_reason").input("a known good retrain, measured by hand")
    press(at, "Promote cand anyway")
    assert not at.exception, at.exception
    with session_scope(services_db) as session:
        assert active_version(session).name == "cand"  # type: ignore[union-attr]
        [activation] = session.scalars(select(ModelActivation)).all()
        assert activation.by == MODERATOR and activation.override_reason == "a known good retrain, measured by hand"
    assert "cand is active" in texts(at)
    assert at.selectbox(key="retrain_rollback_choice").value == "v1"
    assert at.selectbox(key="retrain_rollback_choice").options[0].startswith("v1 (last active ")
    press(at, "Roll back from cand")
    with session_scope(services_db) as session:
        assert active_version(session).name == "v1"  # type: ignore[union-attr]

    at.number_input(key="retrain_epochs").set_value(3)
    press(at, "Retrain")
    assert not at.exception, at.exception
    with session_scope(services_db) as session:
        queued = session.scalars(select(TrainingRun).where(TrainingRun.status == "queued")).one()
    assert queued.params["epochs"] == 3 and queued.requested_by == MODERATOR
    assert f"Training run {queued.id} queued." in texts(at)
    assert [button.disabled for button in at.button if button.label == "Retrain"] == [True]
    press(at, "Cancel training")
    with session_scope(services_db) as session:
        assert session.get(TrainingRun, queued.id).status == "cancelled"  # type: ignore[union-attr]


def test_curves_of_a_one_epoch_run_show_a_point_on_whole_epochs() -> None:
    one = curve_chart(history_frame([{"epoch": 1, "loss": 0.6, "val_loss": 0.7}]), "loss")
    assert one is not None
    spec = one.to_dict()
    assert spec["mark"] == {"type": "line", "point": True}
    assert spec["encoding"]["x"]["axis"]["format"] == "d" and spec["encoding"]["x"]["axis"]["values"] == [1]
    assert spec["encoding"]["x"]["scale"]["domain"] == [0.5, 1.5]
    rows = next(iter(spec["datasets"].values()))
    assert sorted((row["split"], row["loss"]) for row in rows) == [("train", 0.6), ("valid", 0.7)]
    three = curve_chart(history_frame({"accuracy": [0.5, 0.7, 0.8]}), "accuracy")
    assert three is not None and three.to_dict()["encoding"]["x"]["axis"]["values"] == [1, 2, 3]
    assert curve_chart(history_frame({"accuracy": [0.5]}), "loss") is None
