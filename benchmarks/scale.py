"""Scaling out (issue 27): checks per second with one worker host and with two, and how long a promotion takes to
reach both, on the production shape with the object store: PostgreSQL, a Redis of its own, SeaweedFS (S3), one
API process and scoring workers that each have their own empty data folder (a "host": nothing shared on disk, the
model fetched from the bucket and verified).

1. One worker: N distinct uploads, from the first submit until every check is final: checks/s.
2. A second worker joins: N other distinct uploads, the same measure; the ratio of the two (one run).
3. A second model version is registered (published to the bucket) and promoted; checks keep coming; for each
   worker, the time from the promotion to the first check it finished with the new version (so it includes
   noticing the change, fetching and verifying the files, loading the model).

Loopback only. Prints JSON (``--out`` writes it too).

    .venv/bin/python benchmarks/scale.py --images 48 --out benchmarks/scale-results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select

from backend.identity.access import Actor
from backend.settings import Settings
from backend.storage.schema import Check, ModelVersion
from backend.storage.store import MODELS, open_store
from backend.training.versions import promote_version, register_model
from core.model_metadata import SHIPPED_MODEL
from testbed.images import distinct_photos
from testbed.report import emit
from testbed.s3server import SeaweedServer, start_seaweed
from testbed.stack import OwnRedis, Stack, backend_env, create_postgres_database, drop_postgres_database

FINAL = {"done", "failed", "cancelled"}


def start(root: Path, seaweed: SeaweedServer, redis_url: str) -> Stack:
    env = {**backend_env("embedded", root / "api"), "FAKEWATCH_DATABASE_URL": create_postgres_database(),
           "FAKEWATCH_BROKER_URL": redis_url,
           **{f"FAKEWATCH_{key.upper()}": value for key, value in seaweed.store_settings("bench").items()}}
    stack = Stack(kind="redis-postgres", env=env, data_dir=root / "api")
    stack.data_dir.mkdir(parents=True)
    stack.run_cli("db", "upgrade")  # registers the shipped model, published to the bucket
    stack.api_key = stack.run_cli("keys", "create", "bench", "--role", "admin").stdout.strip().splitlines()[-1]
    stack.start_api()
    return stack


def start_worker_host(stack: Stack, name: str) -> None:
    """A scoring worker with a data folder of its own (its model comes from the bucket)."""
    own = {**stack.env, "FAKEWATCH_DATA_DIR": str(stack.data_dir.parent / name)}
    saved, stack.env = stack.env, own
    try:
        stack.start_worker(name)
    finally:
        stack.env = saved


def submit(stack: Stack, images: list[bytes]) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda data: stack.post_image(data, wait=0), images))
    return [response.json()["id"] for response in responses]


def rows(stack: Stack, ids: list[str]) -> list[tuple[str, str, str | None, int | None, Any]]:
    with stack.session() as session:
        return [(row.id, row.status.value, row.claimed_by, row.model_version_id, row.finished_at)
                for row in session.scalars(select(Check).where(Check.id.in_(ids)))]


def throughput(stack: Stack, images: list[bytes], timeout_s: float) -> dict[str, Any]:
    started = time.monotonic()
    ids = submit(stack, images)
    while True:
        found = rows(stack, ids)
        if all(status in FINAL for _, status, *_ in found) or time.monotonic() - started > timeout_s:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    done = sum(status == "done" for _, status, *_ in found)
    by_host: dict[str, int] = {}
    for _, _, claimed_by, *_ in found:
        host = worker_of(stack, claimed_by)
        by_host[host] = by_host.get(host, 0) + 1
    return {"checks": len(ids), "done": done, "seconds": round(elapsed, 2),
            "checks_per_s": round(done / elapsed, 2), "by_worker": by_host}


def worker_of(stack: Stack, claimed_by: str | None) -> str:
    """Which worker host claimed a check (its process group is the worker's)."""
    try:
        group = os.getpgid(int((claimed_by or "").rsplit(":", 1)[1]))
    except (ValueError, IndexError, ProcessLookupError):
        return "unknown"
    return next((name for name, process in stack.processes.items() if process.pid == group), "unknown")


def promotion(stack: Stack, photos: Iterator[bytes], model_dir: Path, timeout_s: float) -> dict[str, Any]:
    copy = model_dir / "bench-v2"
    copy.mkdir(parents=True)
    shutil.copy(SHIPPED_MODEL, copy / "model.keras")
    metadata = json.loads(SHIPPED_MODEL.with_suffix(".json").read_text())
    metadata.update(name="bench-v2")
    metadata.pop("sha256", None)
    (copy / "model.json").write_text(json.dumps(metadata))
    settings: Settings = stack.settings
    with stack.session() as session:
        version = register_model(session, copy / "model.keras", store=open_store(settings, MODELS))
        session.commit()
        version_id = version.id
    with stack.session() as session:
        promote_version(session, version_id, settings, actor=Actor.system("benchmarks"), override_reason="the scale benchmark")
        session.commit()
        promoted_at = session.scalar(select(ModelVersion.activated_at).where(ModelVersion.id == version_id))
    started = time.monotonic()
    ids: list[str] = []
    first: dict[str, float] = {}
    while len(first) < 2 and time.monotonic() - started < timeout_s:
        ids += submit(stack, [next(photos), next(photos)])
        for _, status, claimed_by, model_id, finished_at in rows(stack, ids):
            host = worker_of(stack, claimed_by)
            if status == "done" and model_id == version_id and host not in first:
                first[host] = round((finished_at - promoted_at).total_seconds(), 2)
        time.sleep(0.2)
    return {"seconds_to_first_check_per_worker": first,
            "seconds_until_both": max(first.values()) if len(first) == 2 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48, help="Uploads per throughput phase (distinct images).")
    parser.add_argument("--timeout", type=float, default=300, help="Most seconds a phase may take.")
    parser.add_argument("--out", type=Path, help="Also write the JSON here.")
    args = parser.parse_args()
    photos = iter(distinct_photos(args.images * 2 + 80, size=224))
    root = Path(tempfile.mkdtemp(prefix="fakewatch-scale-"))
    seaweed = start_seaweed(root / "seaweed")
    redis = OwnRedis(root / "redis")
    redis.start()
    stack = start(root, seaweed, redis.url)
    try:
        start_worker_host(stack, "worker1")
        submit(stack, [next(photos)])  # the first check pays for the API's and the worker's warm-up
        one = throughput(stack, [next(photos) for _ in range(args.images)], args.timeout)
        start_worker_host(stack, "worker2")
        two = throughput(stack, [next(photos) for _ in range(args.images)], args.timeout)
        promoted = promotion(stack, photos, root / "models", timeout_s=60)
        result = {
            "benchmark": "scale", "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                              "load_average_1m": round(os.getloadavg()[0], 1)},
            "shape": "PostgreSQL + Redis + SeaweedFS (S3), one API process, scoring workers with their own folders "
                     "(concurrency 1, score batch 32), the shipped model",
            "one_worker": one, "two_workers": two,
            "ratio_two_to_one": round(two["checks_per_s"] / one["checks_per_s"], 2) if one["checks_per_s"] else None,
            "promotion": promoted,
        }
    finally:
        stack.stop()
        drop_postgres_database(stack.env["FAKEWATCH_DATABASE_URL"])
        redis.stop()
        seaweed.stop()
        shutil.rmtree(root, ignore_errors=True)
    emit(result, args.out)


if __name__ == "__main__":
    main()
