"""Faults and load (issue 18), scaled down to run in about ten minutes on a two-core machine, loopback only.

1. PostgreSQL + Redis (a redis-server this benchmark starts on its own port, append-only as in the compose file,
   never the machine's Redis), two scoring workers: a batch of N uploads without faults, then the same size of batch
   with one worker SIGKILLed every K seconds (the one holding checks) and restarted. Lost and failed checks, batch
   times, and how long after each kill its checks were re-queued.
2. The same stack: Redis stopped for 10 s while uploads and reads go on; every answer's status is counted (502/500
   must be 0), nothing lost, and how long after Redis is back every check is final.
3. Load on one API process (gthread, 16 threads, 4 wait slots): C concurrent clients for D seconds, a mix of
   uploads with ``?wait=10``, cached re-checks and GETs; failure ratio, latency percentiles per kind, throughput;
   then again with a second scoring worker.
4. The embedded default (SQLite + SQLite broker), one worker: N uploads, the worker SIGKILLed twice (and restarted),
   and the broker's SQLite file held under an exclusive lock for 10 s; status counts, lost, time.

Prints JSON (``--out`` writes it too). Every count and duration is bounded by the arguments.

    .venv/bin/python benchmarks/reliability.py --out benchmarks/reliability-results.json
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests
from sqlalchemy import func, select

from backend.storage.schema import Check
from backend.training.versions import register_model
from core.model_metadata import SHIPPED_MODEL
from testbed.images import distinct_photos
from testbed.report import emit
from testbed.stack import OwnRedis, Stack, backend_env, create_postgres_database

FINAL = ("done", "failed", "cancelled")
# Defaults of the shipped settings for the sweeper and leases (the test stack shortens them; this measures them).
FAULT_ENV = {"FAKEWATCH_STUCK_AFTER_S": "60", "FAKEWATCH_SWEEP_INTERVAL_S": "5", "FAKEWATCH_LEASE_S": "10"}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def latency_summary(values_ms: list[float]) -> dict[str, Any]:
    return {"n": len(values_ms), "p50_ms": percentile(values_ms, 0.5), "p95_ms": percentile(values_ms, 0.95),
            "max_ms": round(max(values_ms), 1) if values_ms else None}


def start(kind: str, data_dir: Path, model: Path, redis_url: str | None, workers: int) -> Stack:
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**backend_env("embedded", data_dir), **FAULT_ENV}
    if kind == "redis-postgres":
        assert redis_url is not None
        env["FAKEWATCH_DATABASE_URL"] = create_postgres_database()
        env["FAKEWATCH_BROKER_URL"] = redis_url
    stack = Stack(kind=kind, env=env, data_dir=data_dir)
    stack.run_cli("db", "upgrade")
    with stack.session() as session:
        register_model(session, model, activate=True)
    stack.api_key = stack.run_cli("keys", "create", "bench").stdout.strip().splitlines()[-1]
    stack.start_api()
    for index in range(workers):
        stack.start_worker(f"w{index + 1}")
    return stack


class Poster:
    """Uploads images through the API from a few threads, counting every answer's status."""

    def __init__(self, stack: Stack, threads: int = 8) -> None:
        self.stack = stack
        self.codes: collections.Counter[str] = collections.Counter()
        self.ids: list[str] = []
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(threads)

    def post(self, data: bytes, wait: float = 0) -> None:
        try:
            response = self.stack.post_image(data, wait=wait)
            code = str(response.status_code)
            body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
        except requests.RequestException as error:
            code, body = type(error).__name__, {}
        with self.lock:
            self.codes[code] += 1
            if code in ("200", "202") and "id" in body:
                self.ids.append(body["id"])

    def submit_all(self, images: list[bytes], pause_s: float = 0.0) -> None:
        futures = []
        for data in images:
            futures.append(self.pool.submit(self.post, data))
            if pause_s:
                time.sleep(pause_s)
        for future in futures:
            future.result()


def statuses(stack: Stack, ids: list[str]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    with stack.session() as session:
        for start_at in range(0, len(ids), 1000):
            rows = session.execute(select(Check.status, func.count()).where(Check.id.in_(ids[start_at:start_at + 1000]))
                                   .group_by(Check.status))
            for status, count in rows:
                counts[str(status.value if hasattr(status, "value") else status)] += count
    return counts


def wait_final(stack: Stack, ids: list[str], timeout_s: float) -> tuple[collections.Counter[str], float]:
    started = time.monotonic()
    while True:
        counts = statuses(stack, ids)
        if sum(counts[status] for status in FINAL) == len(ids) or time.monotonic() - started > timeout_s:
            return counts, time.monotonic() - started
        time.sleep(0.5)


def restart_worker(stack: Stack, name: str) -> float:
    """Start a killed worker again, waiting until it is warm; returns the seconds that took. Its old log is moved
    aside first, so waiting for "ready." sees the new process's line."""
    log = stack.data_dir / f"{name}.log"
    if log.exists():
        log.rename(log.with_suffix(f".log.{time.monotonic_ns()}"))
    started = time.monotonic()
    stack.start_worker(name)
    return round(time.monotonic() - started, 1)


def holders(stack: Stack, ids: list[str]) -> dict[str, list[str]]:
    """Running checks among ``ids`` by the worker process that holds them."""
    held: dict[str, list[str]] = collections.defaultdict(list)
    with stack.session() as session:
        for start_at in range(0, len(ids), 1000):
            for check_id, by in session.execute(select(Check.id, Check.claimed_by).where(
                    Check.id.in_(ids[start_at:start_at + 1000]), Check.status == "running")):
                held[by or ""].append(check_id)
    return held


def worker_named(stack: Stack, holder: str) -> str | None:
    try:
        group = os.getpgid(int(holder.rsplit(":", 1)[1]))
    except (ValueError, ProcessLookupError, IndexError):
        return None
    return next((name for name, process in stack.processes.items() if process.pid == group), None)


def kill_loop(stack: Stack, poster: Poster, every_s: float, max_kills: int, done: threading.Event,
              worker_names: list[str], restart_at_once: bool = True) -> list[dict[str, Any]]:
    """Every ``every_s``: SIGKILL the worker holding the most checks, restart it, and time until none of its checks
    is still held by the dead process. Restarted at once, as a supervisor does (the compose file's ``restart:
    unless-stopped``, Kubernetes); ``restart_at_once=False`` restarts it only once its checks were re-queued, as
    this benchmark did before issue 24, which counted the lease wait as downtime too."""
    kills: list[dict[str, Any]] = []
    while len(kills) < max_kills and not done.wait(every_s):
        with poster.lock:
            ids = list(poster.ids)
        held = holders(stack, ids)
        victim, holder = None, None
        for by, _checks in sorted(held.items(), key=lambda item: -len(item[1])):
            victim, holder = worker_named(stack, by), by
            if victim:
                break
        victim = victim or random.choice(worker_names)
        dead = held.get(holder or "", [])
        killed_at = time.monotonic()
        stack.stop_process(victim, signal.SIGKILL)
        restart_s: list[float] = []
        restarter = threading.Thread(target=lambda name=victim, took=restart_s: took.append(restart_worker(stack, name)))
        if restart_at_once:
            restarter.start()
        requeued_s = None
        while dead and time.monotonic() - killed_at < 90:
            with stack.session() as session:
                still = session.scalar(select(func.count()).select_from(Check).where(
                    Check.id.in_(dead), Check.status == "running", Check.claimed_by == holder))
            if not still:
                requeued_s = round(time.monotonic() - killed_at, 1)
                break
            time.sleep(0.2)
        if not restart_at_once:
            restarter.start()
        restarter.join()
        kills.append({"worker": victim, "checks_held": len(dead), "requeued_after_s": requeued_s,
                      "restart_s": restart_s[0] if restart_s else None})
    return kills


def batch_run(stack: Stack, images: list[bytes], kill_every_s: float | None, max_kills: int,
              worker_names: list[str], restart_at_once: bool = True) -> dict[str, Any]:
    poster = Poster(stack)
    done = threading.Event()
    kills: list[dict[str, Any]] = []
    killer = None
    if kill_every_s:
        killer = threading.Thread(target=lambda: kills.extend(
            kill_loop(stack, poster, kill_every_s, max_kills, done, worker_names, restart_at_once)))
        killer.start()
    started = time.monotonic()
    poster.submit_all(images)
    counts, _ = wait_final(stack, poster.ids, timeout_s=600)
    elapsed = time.monotonic() - started
    done.set()
    if killer is not None:
        killer.join()
    return {"checks": len(images), "accepted": len(poster.ids), "answers": dict(poster.codes),
            "final": dict(counts), "lost": len(poster.ids) - sum(counts[s] for s in FINAL),
            "failed": counts["failed"], "batch_s": round(elapsed, 1), "kills": kills}


def outage_run(stack: Stack, images: list[bytes], stop: Callable[[], None], resume: Callable[[], None],
               outage_s: float) -> dict[str, Any]:
    """Uploads go on at a steady pace and a reader polls checks and /readyz; the service is stopped 5 s in, for
    ``outage_s``."""
    poster = Poster(stack, threads=4)
    reads: collections.Counter[str] = collections.Counter()
    ready: collections.Counter[str] = collections.Counter()
    reading = threading.Event()

    def reader() -> None:
        while not reading.is_set():
            with poster.lock:
                ids = list(poster.ids[-20:])
            for check_id in ids[:3]:
                try:
                    code = str(requests.get(f"{stack.api_url}/api/v1/checks/{check_id}", headers=stack.headers(),
                                            timeout=30).status_code)
                except requests.RequestException as error:
                    code = type(error).__name__
                reads[code] += 1
            try:
                ready[str(requests.get(f"{stack.api_url}/readyz", timeout=30).status_code)] += 1
            except requests.RequestException as error:
                ready[type(error).__name__] += 1
            time.sleep(0.2)

    reader_thread = threading.Thread(target=reader)
    reader_thread.start()
    # Paced so that uploads go on before, during and after the outage.
    uploads = threading.Thread(target=poster.submit_all, args=(images, (outage_s + 10) / max(1, len(images))))
    started = time.monotonic()
    uploads.start()
    time.sleep(5)
    stop()
    stopped_at = time.monotonic()
    time.sleep(outage_s)
    resume()
    resumed_at = time.monotonic()
    uploads.join()
    counts, _ = wait_final(stack, poster.ids, timeout_s=300)
    all_final_s = time.monotonic() - resumed_at
    reading.set()
    reader_thread.join()
    return {"checks": len(images), "accepted": len(poster.ids), "upload_answers": dict(poster.codes),
            "read_answers": dict(reads), "readyz_answers": dict(ready), "outage_s": round(resumed_at - stopped_at, 1),
            "final": dict(counts), "lost": len(poster.ids) - sum(counts[s] for s in FINAL),
            "failed": counts["failed"], "all_final_after_resume_s": round(all_final_s, 1),
            "total_s": round(time.monotonic() - started, 1)}


def load_run(stack: Stack, fresh: list[bytes], cached: list[bytes], clients: int, duration_s: float,
             think_s: float = 0.0) -> dict[str, Any]:
    """``clients`` threads, each looping: an upload with ?wait=10 (a third), a cached re-check (a third), a GET, with
    ``think_s`` between its requests (0: closed loop, every client always has a request outstanding)."""
    latencies: dict[str, list[float]] = {"upload": [], "cached": [], "get": []}
    codes: collections.Counter[str] = collections.Counter()
    accepted: list[str] = []
    lock = threading.Lock()
    fresh_iter = iter(fresh)
    deadline = time.monotonic() + duration_s
    session_local = threading.local()

    def client(index: int) -> None:
        rng = random.Random(index)
        session_local.http = requests.Session()
        http: requests.Session = session_local.http
        while time.monotonic() < deadline:
            kind = rng.choice(("upload", "cached", "get"))
            started = time.perf_counter()
            try:
                if kind == "get" and accepted:
                    response = http.get(f"{stack.api_url}/api/v1/checks/{rng.choice(accepted)}",
                                        headers=stack.headers(), timeout=60)
                else:
                    if kind == "upload":
                        with lock:
                            data = next(fresh_iter, None)
                        if data is None:
                            kind, data = "cached", rng.choice(cached)
                    else:
                        kind, data = "cached", rng.choice(cached)
                    response = http.post(f"{stack.api_url}/api/v1/checks", params={"wait": 10},
                                         headers=stack.headers(), files={"image": ("i.jpg", data)}, timeout=60)
                code = str(response.status_code)
                if code in ("200", "202") and kind != "get":
                    with lock:
                        accepted.append(response.json()["id"])
            except requests.RequestException as error:
                code = type(error).__name__
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                codes[code] += 1
                latencies["get" if kind == "get" and accepted else kind].append(elapsed)
            if think_s:
                time.sleep(rng.uniform(0.5, 1.5) * think_s)

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.monotonic() - started
    total = sum(codes.values())
    failures = sum(count for code, count in codes.items() if code not in ("200", "202"))
    counts, settle_s = wait_final(stack, accepted, timeout_s=180)
    return {"clients": clients, "think_s": think_s, "duration_s": round(elapsed, 1), "requests": total,
            "throughput_rps": round(total / elapsed, 1), "failure_ratio": round(failures / max(1, total), 4),
            "answers": dict(codes), "latency": {kind: latency_summary(values) for kind, values in latencies.items()},
            "accepted": len(accepted), "final_afterwards": sum(counts[s] for s in FINAL),
            "settled_after_s": round(settle_s, 1)}


def production(args: argparse.Namespace, tmp: Path, results: dict[str, Any]) -> None:
    redis_server = OwnRedis(tmp / "redis", persist=True)
    redis_server.start()
    stack = start(kind="redis-postgres", data_dir=tmp / "pg", model=args.model, redis_url=redis_server.url + "/0",
                  workers=2)
    try:
        images = distinct_photos(20 + 2 * args.checks + args.outage_checks + args.load_fresh, size=args.size)
        warm = Poster(stack)
        warm_images = images[:20]
        warm.submit_all(warm_images)
        wait_final(stack, warm.ids, 120)
        pool, images = images[20:], images[20:]
        if "kills" in args.only:
            print("production: batch without kills", file=sys.stderr)
            results["kills"] = {"baseline": batch_run(stack, pool[:args.checks], None, 0, ["w1", "w2"])}
            print("production: batch with kills", file=sys.stderr)
            results["kills"]["with_kills"] = batch_run(stack, pool[args.checks:2 * args.checks], args.kill_every,
                                                       args.max_kills, ["w1", "w2"],
                                                       restart_at_once=not args.restart_after_requeue)
            base, killed = results["kills"]["baseline"]["batch_s"], results["kills"]["with_kills"]["batch_s"]
            results["kills"]["slowdown"] = round(killed / base, 2) if base else None
        if "outage" in args.only:
            print("production: Redis outage", file=sys.stderr)
            results["redis_outage"] = outage_run(stack, pool[2 * args.checks:2 * args.checks + args.outage_checks],
                                                 redis_server.stop, redis_server.start, args.outage_s)
        if "load" in args.only:
            fresh = pool[2 * args.checks + args.outage_checks:]
            cached = images[:50] if "kills" in args.only else warm_images  # scored already: answered from cache
            print("production: load, one scoring worker", file=sys.stderr)
            stack.stop_process("w2")
            half = len(fresh) // 2
            results["load"] = {"one_worker": load_run(stack, fresh[:half], cached, args.clients, args.load_s,
                                                      args.think_s)}
            print("production: load, two scoring workers", file=sys.stderr)
            stack.start_worker("w2")
            results["load"]["two_workers"] = load_run(stack, fresh[half:], cached, args.clients, args.load_s,
                                                      args.think_s)
    finally:
        stack.stop()
        redis_server.stop()


def embedded(args: argparse.Namespace, tmp: Path, results: dict[str, Any]) -> None:
    stack = start(kind="embedded", data_dir=tmp / "embedded", model=args.model, redis_url=None, workers=1)
    try:
        images = distinct_photos(args.embedded_checks + 20, size=args.size)
        warm = Poster(stack)
        warm.submit_all(images[:20])
        wait_final(stack, warm.ids, 120)
        broker_file = stack.settings.data_path / "broker.db"
        poster = Poster(stack, threads=4)
        lock_window: dict[str, float] = {}

        def faults() -> list[dict[str, Any]]:
            events: list[dict[str, Any]] = []
            for _ in range(2):
                time.sleep(args.embedded_kill_after)
                with poster.lock:
                    ids = list(poster.ids)
                held = sum(len(checks) for checks in holders(stack, ids).values())
                stack.stop_process("w1", signal.SIGKILL)
                events.append({"kill": "w1", "checks_held": held, "restart_s": restart_worker(stack, "w1")})
            time.sleep(3)
            connection = sqlite3.connect(broker_file, timeout=30, isolation_level=None)
            connection.execute("BEGIN EXCLUSIVE")
            lock_window["start"] = time.monotonic()
            time.sleep(args.outage_s)
            connection.execute("ROLLBACK")
            connection.close()
            lock_window["end"] = time.monotonic()
            events.append({"broker_locked_s": round(lock_window["end"] - lock_window["start"], 1)})
            return events

        events: list[dict[str, Any]] = []
        fault_thread = threading.Thread(target=lambda: events.extend(faults()))
        started = time.monotonic()
        fault_thread.start()
        # Uploads go on, paced, until the faults are over (at most --embedded-checks of them).
        futures = []
        for data in images[20:]:
            futures.append(poster.pool.submit(poster.post, data))
            time.sleep(args.embedded_pause)
            if not fault_thread.is_alive() and len(futures) >= 50:
                break
        for future in futures:
            future.result()
        fault_thread.join()
        counts, _ = wait_final(stack, poster.ids, timeout_s=300)
        results["embedded"] = {"checks": len(futures), "accepted": len(poster.ids),
                               "answers": dict(poster.codes), "faults": events, "final": dict(counts),
                               "lost": len(poster.ids) - sum(counts[s] for s in FINAL), "failed": counts["failed"],
                               "total_s": round(time.monotonic() - started, 1)}
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--size", type=int, default=96, help="side of each JPEG in pixels")
    parser.add_argument("--checks", type=int, default=1500, help="checks per production batch (issue: 10,000)")
    parser.add_argument("--kill-every", type=float, default=15.0, help="seconds between worker kills (issue: 30)")
    parser.add_argument("--max-kills", type=int, default=3)
    parser.add_argument("--restart-after-requeue", action="store_true",
                        help="restart a killed worker only once its checks were re-queued (before issue 24: the "
                             "lease wait counted as downtime); by default it restarts at once, as a supervisor does")
    parser.add_argument("--outage-checks", type=int, default=400, help="uploads during the Redis outage run")
    parser.add_argument("--outage-s", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients (issue: 150)")
    parser.add_argument("--load-s", type=float, default=40.0, help="seconds per load run (issue: 90)")
    parser.add_argument("--load-fresh", type=int, default=1200, help="distinct images the load runs may upload")
    parser.add_argument("--embedded-checks", type=int, default=500, help="issue: 1,500")
    parser.add_argument("--embedded-kill-after", type=float, default=8.0)
    parser.add_argument("--embedded-pause", type=float, default=0.15, help="seconds between embedded uploads")
    parser.add_argument("--think-s", type=float, default=0.0,
                        help="mean pause between one load client's requests (0: closed loop)")
    parser.add_argument("--only", default="kills,outage,load,embedded", help="which parts to run, comma-separated")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"model": str(args.model), "image_px": args.size, "cpus": os.cpu_count(),
                               "settings": FAULT_ENV, "arguments": {key: str(value) for key, value in vars(args).items()}}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        if {"kills", "outage", "load"} & set(args.only.split(",")):
            production(args, Path(tmp), results)
        if "embedded" in args.only:
            embedded(args, Path(tmp), results)
    results["wall_s"] = round(time.monotonic() - started, 1)
    emit(results, args.out)


if __name__ == "__main__":
    main()
