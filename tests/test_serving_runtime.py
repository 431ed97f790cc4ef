"""The serving runtime: an exported model scores as Keras does, a file whose checksum does not match is refused, a
scoring worker never imports TensorFlow, and the worker's batcher groups tasks under its latency budget."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from backend.settings import Settings
from backend.storage.db import session_scope
from backend.training.versions import register_model
from core.model_metadata import ModelFileMismatch, model_files, read_metadata, runtime_file
from models.serving import Detector
from tests.fixtures_images import distinct_photos

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
    import worker.app  # the scoring worker's start-up: its tasks, signal handlers and everything they import
    from worker.detectors import detector_for
    from backend.storage.db import session_scope
    from backend.training.versions import active_version
    with session_scope(worker.app.celery_app.settings) as session:
        detector = detector_for(active_version(session))
    from PIL import Image
    score = detector.score([Image.new("RGB", (320, 240), (90, 60, 30))])[0]
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
    print(json.dumps({"score": score, "runtime": detector.runtime.name, "loaded": loaded,
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
