"""Benchmark bulk URL scanning end to end and print JSON.

Serves N images of varied sizes and formats from a local HTTP server (the fetch allow-list lets the worker reach
127.0.0.1), submits them as one batch to a running API + scoring worker, and measures images per second from the
submission until the last verdict is stored, on Redis + PostgreSQL and on the embedded default. On the same images
it measures two references: (a) the limit, decode + preprocess + model inference in one process in micro-batches,
no HTTP, no queue; (b) the seed's loop, one ``model.predict`` call per image. It also times each stage of the
worker's path in-process (fetch, store checks, decode, inference) to show where the time goes, and how long the
API takes to accept a batch of 10,000 URLs.

    .venv/bin/python benchmarks/batch.py [--images 2000] [--backends redis-postgres,embedded] [--concurrency 2]
                                         [--model models/shipped/default.keras]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image

from core.decoding import decode_image, inspect_image
from testbed.images import LocalServer
from testbed.stack import Stack, backend_env, isolated_settings, local_allowlist

# The default upload caps: what a worker decodes stored images under.
LIMITS = isolated_settings().image_limits

SIDES = (96, 160, 256, 384, 512, 640, 800, 1024)
MICRO_BATCH = 32
SEED_LOOP_IMAGES = 300


def source_photos() -> list[np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    return photos + list(load_sample_images().images)


def make_images(count: int, seed: int = 7) -> list[bytes]:
    """``count`` distinct images: crops of real photos resized to sides from 96 to 1024 px, aspect ratios varied,
    JPEG mostly and PNG for one in eight of the small ones."""
    rng = np.random.default_rng(seed)
    photos = source_photos()
    out = []
    for index in range(count):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        crop_h, crop_w = int(rng.integers(height // 2, height)), int(rng.integers(width // 2, width))
        top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
        side = SIDES[index % len(SIDES)]
        aspect = crop_w / crop_h
        size = (side, max(64, int(side / aspect))) if aspect >= 1 else (max(64, int(side * aspect)), side)
        image = Image.fromarray(np.ascontiguousarray(photo[top : top + crop_h, left : left + crop_w])).resize(size)
        buffer = io.BytesIO()
        if side <= 256 and index % 8 == 0:
            image.save(buffer, "PNG")
        else:
            image.save(buffer, "JPEG", quality=int(rng.integers(75, 95)))
        out.append(buffer.getvalue())
    return out


# --- references in one process ------------------------------------------------------------------------------------


def measure_limit(images: list[bytes], model_path: Path) -> dict[str, Any]:
    """(a): decode + preprocess + inference, micro-batches of 32, one process; also each stage alone."""
    from models.serving import Detector

    detector = Detector.load(model_path)
    detector.score([decode_image(images[0], LIMITS)])  # trace the graph outside the timing
    started = time.perf_counter()
    for start in range(0, len(images), MICRO_BATCH):
        detector.score([decode_image(data, LIMITS) for data in images[start : start + MICRO_BATCH]])
    total = time.perf_counter() - started
    decode_s = _timed(lambda: [decode_image(data, LIMITS) for data in images])
    inspect_s = _timed(lambda: [inspect_image(data, LIMITS) for data in images])
    decoded = [decode_image(data, LIMITS) for data in images[:512]]
    infer_s = _timed(lambda: [detector.score(decoded[s : s + MICRO_BATCH]) for s in range(0, len(decoded), MICRO_BATCH)])
    return {
        "images_per_s": round(len(images) / total, 1),
        "seconds": round(total, 2),
        "stage_ms_per_image": {
            "decode": round(1000 * decode_s / len(images), 2),
            "inspect_image (intake check, a full decode)": round(1000 * inspect_s / len(images), 2),
            "preprocess_and_inference": round(1000 * infer_s / len(decoded), 2),
        },
    }


def measure_seed_loop(images: list[bytes], model_path: Path) -> dict[str, Any]:
    """(b): the seed app's way, one ``model.predict`` per image, with the same model and preprocessing."""
    import keras

    from models.preprocessing import prepare
    from models.serving import Detector, calibrate, pool_logits, rows_to_logits

    detector = Detector.load(model_path)
    model = keras.saving.load_model(model_path, compile=False)  # the seed's loop runs Keras itself
    subset = images[:SEED_LOOP_IMAGES]
    first = prepare([decode_image(subset[0], LIMITS)], detector.preprocessing)[0]
    model.predict(first.astype("float32"), verbose=0)
    started = time.perf_counter()
    for data in subset:
        rows, counts = prepare([decode_image(data, LIMITS)], detector.preprocessing)
        output = model.predict(rows.astype("float32"), verbose=0)
        logits = pool_logits(rows_to_logits(output, detector.metadata.get("output", "logit")), counts,
                             detector.preprocessing.get("pool", "mean"))
        calibrate(logits, detector.metadata.get("calibration"))
    total = time.perf_counter() - started
    return {"images_per_s": round(len(subset) / total, 1), "images_timed": len(subset), "seconds": round(total, 2)}


def measure_fetch(server: LocalServer, paths: list[str]) -> dict[str, Any]:
    """The worker's fetch stage alone (HTTP + the fetcher's intake check), chunk by chunk as a worker does it."""
    from worker.fetching import fetch_all

    settings = isolated_settings(fetch_allowlist=local_allowlist())
    urls = [server.url(path) for path in paths]
    started = time.perf_counter()
    for start in range(0, len(urls), MICRO_BATCH):
        outcomes = fetch_all(urls[start : start + MICRO_BATCH], settings, budget_s=60)
        assert all(outcome.image is not None for outcome in outcomes), [o.error for o in outcomes if o.error][:3]
    total = time.perf_counter() - started
    return {"ms_per_image": round(1000 * total / len(urls), 2), "images_per_s": round(len(urls) / total, 1)}


def _timed(work: Any) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


# --- the real pipeline ------------------------------------------------------------------------------------------------


def start_stack(kind: str, root: Path, model_path: Path, concurrency: int) -> Stack:
    """API + one scoring worker with ``concurrency`` processes; production sweeper timings, not the tests' short ones."""
    from backend.training.versions import register_model

    env = backend_env(kind, root)
    env.update({"FAKEWATCH_STUCK_AFTER_S": "120", "FAKEWATCH_SWEEP_INTERVAL_S": "15"})
    stack = Stack(kind=kind, env=env, data_dir=root)
    stack.run_cli("db", "upgrade")
    with stack.session() as session:
        register_model(session, model_path, activate=True)
    stack.api_key = stack.run_cli("keys", "create", "bench").stdout.strip().splitlines()[-1]
    stack.start_api()
    stack.start_process("worker", "worker", "--concurrency", str(concurrency))
    stack.wait_for_log("worker", "ready.", timeout=180)
    # Each pool process loads the model after "ready"; wait for all of them, then warm them with a small batch.
    deadline = time.monotonic() + 180
    while stack.log_text("worker").count("loading model version") < concurrency and time.monotonic() < deadline:
        time.sleep(0.5)
    return stack


def warm_up(stack: Stack, server: LocalServer, concurrency: int) -> None:
    """A small batch of other images first, so every worker process has traced the model's graph."""
    for index, data in enumerate(make_images(MICRO_BATCH * concurrency * 2, seed=99)):
        server.routes[f"/warm/{index}.img"] = (200, {}, data)
    run_batch(stack, [server.url(f"/warm/{index}.img") for index in range(MICRO_BATCH * concurrency * 2)])


def run_batch(stack: Stack, urls: list[str]) -> dict[str, Any]:
    from sqlalchemy import func, select

    from backend.storage.schema import Check

    submitted = time.time()
    response = requests.post(f"{stack.api_url}/api/v1/batches", headers=stack.headers(),
                             json={"urls": urls, "name": "benchmark"}, timeout=120)
    accepted_s = time.time() - submitted
    response.raise_for_status()
    batch_id = response.json()["id"]
    while True:
        batch = requests.get(f"{stack.api_url}/api/v1/batches/{batch_id}", headers=stack.headers(), timeout=30).json()
        if batch["status"] == "done":
            break
        time.sleep(0.5)
    with stack.session() as session:
        rows = session.execute(select(Check.queued_at, Check.started_at, Check.finished_at, Check.attempts)
                               .where(Check.batch_id == batch_id)).all()
        first_start = session.scalar(select(func.min(Check.started_at)).where(Check.batch_id == batch_id))
    last = max(row.finished_at for row in rows).timestamp()
    elapsed = last - submitted
    chunk_s = sorted({round(row.finished_at.timestamp() - row.started_at.timestamp(), 3) for row in rows})
    return {
        "images_per_s": round(len(urls) / elapsed, 1),
        "seconds_to_last_verdict": round(elapsed, 2),
        "accept_s": round(accepted_s, 3),
        "first_item_started_after_s": round(first_start.timestamp() - submitted, 2) if first_start else None,
        "chunk_seconds_median": round(statistics.median(chunk_s), 2),
        "done": batch["done"], "failed": batch["failed"],
        "retried_items": sum(1 for row in rows if row.attempts > 1),
    }


def measure_acceptance(stack: Stack, server: LocalServer, count: int = 10_000) -> float:
    """Seconds for the API to accept ``count`` URLs; the batch is cancelled at once (its URLs do not exist)."""
    urls = [server.url(f"/absent/{index}.jpg") for index in range(count)]
    started = time.perf_counter()
    response = requests.post(f"{stack.api_url}/api/v1/batches", headers=stack.headers(), json={"urls": urls}, timeout=120)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    requests.post(f"{stack.api_url}/api/v1/batches/{response.json()['id']}/cancel", headers=stack.headers(), timeout=60)
    return round(elapsed, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--backends", default="redis-postgres,embedded")
    parser.add_argument("--concurrency", type=int, default=2, help="scoring worker processes (2 cores here)")
    parser.add_argument("--model", type=Path, default=Path("models/shipped/default.keras"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    model_path = args.model.resolve()

    images = make_images(args.images)
    server = LocalServer()
    paths = []
    for index, data in enumerate(images):
        kind = "png" if data.startswith(b"\x89PNG") else "jpg"
        paths.append(f"/img/{index}.{kind}")
        server.routes[paths[-1]] = (200, {"Content-Type": f"image/{'png' if kind == 'png' else 'jpeg'}"}, data)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count()},
        "images": {"count": len(images), "mean_kb": round(sum(map(len, images)) / len(images) / 1024, 1),
                   "sides_px": list(SIDES), "png_share": round(sum(p.endswith(".png") for p in paths) / len(paths), 3)},
        "model": str(model_path.relative_to(Path.cwd()) if model_path.is_relative_to(Path.cwd()) else model_path),
        "worker_processes": args.concurrency,
    }
    try:
        report["limit_a"] = measure_limit(images, model_path)
        report["seed_loop_b"] = measure_seed_loop(images, model_path)
        report["worker_fetch_stage"] = measure_fetch(server, paths)
        report["batches"] = {}
        for kind in args.backends.split(","):
            with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as root:
                stack = start_stack(kind, Path(root), model_path, args.concurrency)
                try:
                    warm_up(stack, server, args.concurrency)
                    result = run_batch(stack, [server.url(path) for path in paths])
                    result["accept_10000_urls_s"] = measure_acceptance(stack, server)
                    limit = report["limit_a"]["images_per_s"]
                    result["share_of_limit_a"] = round(result["images_per_s"] / limit, 3)
                    result["times_seed_loop_b"] = round(result["images_per_s"] / report["seed_loop_b"]["images_per_s"], 1)
                    report["batches"][kind] = result
                finally:
                    stack.stop()
    finally:
        server.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
