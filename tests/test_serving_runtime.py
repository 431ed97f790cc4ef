"""The serving runtime: an exported model scores as Keras does, a file whose checksum does not match is refused, a
scoring worker never imports TensorFlow, and the worker's batcher groups tasks under its latency budget."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from backend.checks.workers import workers_state
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.training.versions import active_version, register_model
from core.model_metadata import SHIPPED_MODEL, ModelFileMismatch, model_files, read_metadata, runtime_file
from models.serving import Detector, Scored
from testbed.images import distinct_photos
from testbed.stack import Stack
from worker.batching import Batcher

# Largest |P(fake)| difference accepted between Keras and the exported float32 file on the same images.
PARITY = 1e-4


def _images() -> list[Image.Image]:
    photos = [Image.open(io.BytesIO(data)).convert("RGB") for data in distinct_photos(4)]
    return [*photos, Image.new("RGB", (500, 333), (40, 90, 200))]


def test_exported_model_scores_as_keras_does(tiny_model_path: Path) -> None:
    """Training exported the model beside its .keras file and listed both with their SHA-256; the same images get
    the same scores and heat maps from LiteRT and from Keras."""
    import keras  # noqa: PLC0415 - TensorFlow, only for the Keras side of the comparison

    metadata = read_metadata(tiny_model_path)
    roles = {entry.role: entry for entry in model_files(tiny_model_path)}
    assert set(roles) == {"keras", "litert"} and roles["litert"].path == tiny_model_path.with_suffix(".tflite")
    assert runtime_file(tiny_model_path) == roles["litert"] and metadata["runtime"]["parity_max_abs_diff"] < 1e-3

    served = Detector.load(tiny_model_path)
    assert served.runtime.name == "litert"
    reference = Detector.from_keras(keras.saving.load_model(tiny_model_path, compile=False), metadata)
    images = _images()
    ours, theirs = served.score_with_regions(images), reference.score_with_regions(images)
    differences = [abs(a.score - b.score) for a, b in zip(ours, theirs, strict=True)]
    differences += [abs(ra.score - rb.score) for a, b in zip(ours, theirs, strict=True)
                    for ra, rb in zip(a.regions, b.regions, strict=True)]
    assert max(differences) < PARITY, f"largest difference {max(differences):.2e}"
    assert [r.box for r in ours[0].regions] == [r.box for r in theirs[0].regions]
    assert len({round(s.score, 3) for s in ours}) > 1  # the images score differently: the test can see a mix-up


def test_a_model_file_whose_checksum_does_not_match_is_refused(tiny_model_path: Path, tmp_path: Path) -> None:
    for suffix in (".keras", ".json", ".tflite"):
        shutil.copy(tiny_model_path.with_suffix(suffix), tmp_path)
    copied = tmp_path / tiny_model_path.name  # a version's files are found by the names its metadata lists
    assert Detector.load(copied).score([Image.new("RGB", (96, 96))])  # the intact copy loads

    exported = copied.with_suffix(".tflite")
    data = bytearray(exported.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    exported.write_bytes(bytes(data))
    with pytest.raises(ModelFileMismatch) as refused:
        Detector.load(copied)
    assert refused.value.code == "invalid_model"
    assert f"{exported} does not match the SHA-256" in refused.value.message

    # A version listed without an export falls back to its .keras file, which is checked the same way.
    metadata = json.loads(copied.with_suffix(".json").read_text())
    metadata.pop("runtime")
    metadata["files"] = metadata["files"][:1]
    copied.with_suffix(".json").write_text(json.dumps(metadata))
    copied.write_bytes(copied.read_bytes() + b"\0")
    with pytest.raises(ModelFileMismatch, match=f"{copied.name} does not match"):
        Detector.load(copied)


NO_TENSORFLOW = textwrap.dedent("""
    import json, sys, time
    started = time.monotonic()
    import fakewatch.cli, worker.app  # `fakewatch worker`'s start-up: its tasks, signal handlers and all they import
    from worker.detectors import detector_for
    from backend.storage.db import session_scope
    from backend.training.versions import active_version
    with session_scope(worker.app.celery_app.settings) as session:
        detector = detector_for(active_version(session), worker.app.celery_app.settings)
    from PIL import Image
    score = detector.score([Image.new("RGB", (320, 240), (90, 60, 30))])[0]
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
    # Nor the API's, the console's or training's libraries: seconds of a cold start, memory in every process.
    web = sorted({name.split(".")[0] for name in sys.modules
                  if name.split(".")[0] in ("flask", "apiflask", "streamlit", "matplotlib", "sklearn", "alembic")})
    print(json.dumps({"score": score, "runtime": detector.runtime.name, "loaded": loaded, "web": web,
                      "seconds": time.monotonic() - started}))
""")


def test_a_scoring_worker_process_never_imports_tensorflow(tiny_model_path: Path, database: Settings) -> None:
    with session_scope(database) as session:
        register_model(session, tiny_model_path, activate=True)
    env = {"FAKEWATCH_DATA_DIR": str(database.data_path), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["runtime"] == "litert" and 0.0 <= report["score"] <= 1.0
    assert report["loaded"] == [], f"the scoring worker imported {report['loaded'][:5]}"
    assert report["web"] == [], f"the scoring worker imported {report['web']}"


def test_readyz_shows_a_keyed_caller_the_workers_that_can_score(embedded_stack: Stack) -> None:
    """The stack's scoring worker announced itself once its model was warm; /readyz stays about the API for an
    anonymous probe, and tells a keyed caller how many workers hold the active model."""
    anonymous = requests.get(f"{embedded_stack.api_url}/readyz", timeout=10)
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ready"}
    keyed = requests.get(f"{embedded_stack.api_url}/readyz", headers=embedded_stack.headers(), timeout=10).json()
    assert keyed["workers"]["ready"] >= 1 and keyed["workers"]["versions"] == {keyed["model_version"]: keyed["workers"]["seen"]}
    with embedded_stack.session() as session:
        version = active_version(session)
        assert version is not None and workers_state(session, version.name).ready == keyed["workers"]["ready"]


def test_concurrent_tasks_are_scored_together_under_the_latency_budget() -> None:
    """Four tasks in flight bring their images at slightly different times: one model call scores them all, each
    gets its own results (the same as scored alone), and nobody waits much past the budget."""
    detector = Detector.load(SHIPPED_MODEL)
    images = _images()[:4]
    alone = [detector.score_with_regions([image])[0].score for image in images]
    batcher: Batcher[Image.Image, Scored] = Batcher(detector.score_with_regions, budget_s=0.5)
    start = threading.Barrier(len(images))
    results: dict[int, float] = {}
    waited: dict[int, float] = {}

    def task(index: int) -> None:
        with batcher.expecting():
            start.wait()
            time.sleep(0.01 * index)  # claiming, fetching, decoding: each task is ready at its own moment
            began = time.monotonic()
            results[index] = batcher.score([images[index]])[0].score
            waited[index] = time.monotonic() - began

    threads = [threading.Thread(target=task, args=(index,)) for index in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert batcher.calls == [4]  # the leader waited for the tasks in flight, not for the whole budget
    assert [results[i] for i in range(4)] == pytest.approx(alone, abs=1e-6)
    # The last task came 30 ms after the first and waited only for the model call; the first one for the others too.
    model_s = batcher.call_seconds[0]
    assert waited[3] <= model_s + 0.2 and waited[0] <= 0.03 + model_s + 0.2, (waited, model_s)

    # A task alone is scored at once; one that waits on a task that never brings images waits the budget at most.
    lone: Batcher[Image.Image, Scored] = Batcher(detector.score_with_regions, budget_s=0.3)
    began = time.monotonic()
    lone.score([images[0]])
    alone_s = time.monotonic() - began
    assert alone_s < 0.3 and lone.calls == [1]
    straggler_started, release = threading.Event(), threading.Event()

    def straggler() -> None:
        with lone.expecting():
            straggler_started.set()
            release.wait(10)  # a task still fetching: it never calls score

    thread = threading.Thread(target=straggler)
    thread.start()
    straggler_started.wait(5)
    began = time.monotonic()
    lone.score([images[1]])
    waited_s = time.monotonic() - began
    release.set()
    thread.join(timeout=10)
    assert 0.25 <= waited_s < 0.3 + alone_s + 0.5, waited_s
