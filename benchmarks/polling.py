"""Reads under load: how long a client polling its check and its batch waits, idle and while a batch is scored, and
the two cheap paths (a cached re-check of the same bytes, a 10,000-URL batch accepted), for this tree and another
checkout (the landed code, e.g. ``git worktree add /tmp/base d1c1a0c``) in the same run. Prints JSON.

For each tree, on the embedded default (SQLite database and broker; ``--backends`` adds redis-postgres), with the
real API (``fakewatch api``: gunicorn gthread, its default threads) and a real scoring worker (``--concurrency 2``):

1. warm-up: a batch of ``--clients`` URLs (served by a local HTTP server on 127.0.0.1) is scored to the end;
2. idle: ``--clients`` pollers, each on a connection of its own, poll at ``--hz`` for ``--idle-s`` seconds, each
   asking in turn for its own check of that batch (GET /api/v1/checks/{id}) and for the batch (GET
   /api/v1/batches/{id});
3. during a batch: a batch of ``--images`` new URLs is submitted; each poller now polls one item of it and the batch,
   until the batch is done (at most ``--busy-max-s``); GET latencies are counted from submission to the last verdict,
   and the batch's images a second is reported beside them (what a read-friendly setting costs the batch);
4. cached re-check: one upload is scored, then the same bytes are POSTed ``--cached`` times with ``?wait=10``
   (one after the other, a new connection each, as benchmarks/latency.py does); p50/p95;
5. acceptance: ``--accept-runs`` batches of ``--accept-urls`` URLs (absent paths, cancelled at once) are POSTed; the
   time to the 202, median and each.

Latency is client-side, from the request's first byte to the response's last: it includes queueing in the API. A
poll answered late is followed at once by the next (missed ticks are not made up), so a slow API does not get extra
load. Everything listens on 127.0.0.1.

    python benchmarks/polling.py --base /tmp/base [--images 300] [--clients 100] [--hz 2] [--idle-s 15]
        [--cached 100] [--accept-urls 10000] [--accept-runs 3] [--variant NAME:KEY=VALUE,...]
        [--backends embedded[,redis-postgres]] [--out benchmarks/polling-results.json]

``--variant`` runs this tree once more with extra environment (e.g. ``--variant nice0:FAKEWATCH_SCORING_NICE=0``),
to compare a setting's figures in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

from testbed.images import LocalServer, distinct_photos
from testbed.report import emit
from testbed.trees import run_in_tree

# Run inside each tree's own interpreter (PYTHONPATH = that tree), so each tree's stack code starts each tree's API
# and worker. It uses the test stack of the tree (testbed/stack.py, or tests/stack.py in older trees) and nothing
# else of it beyond the schema, so older checkouts run it too.
INNER = r"""
import asyncio, json, statistics, sys, time
from pathlib import Path
import requests
try:
    from testbed.stack import Stack, backend_env, free_port, wait_for_url
except ImportError:  # trees before testbed/ kept the stack under tests/
    from tests.stack import Stack, backend_env, free_port, wait_for_url
from sqlalchemy import select
from backend.storage.schema import Check
from backend.training.versions import register_model
from core.model_metadata import SHIPPED_MODEL

config = {**json.loads(sys.argv[1]), "root": sys.argv[2]}
root = Path(config["root"])
images_url, clients, hz = config["images_url"], config["clients"], config["hz"]


def pct(values, q):
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1) if ordered else None


def summary(latencies, seconds=None):
    out = {"n": len(latencies), "p50_ms": pct(latencies, 0.5), "p95_ms": pct(latencies, 0.95),
           "p99_ms": pct(latencies, 0.99), "max_ms": round(max(latencies), 1) if latencies else None}
    if seconds:
        out["requests_per_s"] = round(len(latencies) / seconds, 1)
    return out


class Poller:
    # One client: a keep-alive HTTP/1.1 connection of its own, raw asyncio streams (cheap enough that 100 of them
    # in one loop measure the server, not the client).
    def __init__(self, host, port, key):
        self.host, self.port, self.key = host, port, key
        self.reader = self.writer = None

    async def get(self, path):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write((f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                           f"Authorization: Bearer {self.key}\r\n\r\n").encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length)
        if close:
            self.writer.close(); self.writer = None
        return status, body


async def poll(stack, targets, stop, phase, hz):
    # targets: one (check path, batch path) per client. Returns {phase name: [latency ms]} for GETs that began in
    # each phase; phase() names the current one (None: do not count).
    host, port = stack.api_url.removeprefix("http://").split(":")
    latencies, errors = {}, {}
    async def client(index, pair):
        poller = Poller(host, int(port), stack.api_key)
        await asyncio.sleep(index / clients / hz)  # spread the clients over one interval
        turn, period = index % 2, 1.0 / hz
        next_at = time.perf_counter()
        while not stop():
            name = phase()
            started = time.perf_counter()
            try:
                status, _ = await asyncio.wait_for(poller.get(pair[0]()[turn]), 60)
            except Exception as error:  # a dropped connection: count it, reconnect
                poller.writer = None; status = type(error).__name__
            elapsed = 1000 * (time.perf_counter() - started)
            if name is not None:
                if status == 200:
                    latencies.setdefault(name, []).append(elapsed)
                else:
                    errors.setdefault(name, {}).setdefault(str(status), 0)
                    errors[name][str(status)] += 1
            turn ^= 1
            next_at = max(next_at + period, time.perf_counter())
            await asyncio.sleep(next_at - time.perf_counter())
    await asyncio.gather(*(client(i, pair) for i, pair in enumerate(targets)))
    return latencies, errors


def submit_batch(stack, urls):
    response = requests.post(f"{stack.api_url}/api/v1/batches", headers=stack.headers(), json={"urls": urls},
                             timeout=300)
    response.raise_for_status()
    return response.json()["id"]


def batch_state(stack, batch_id):
    return requests.get(f"{stack.api_url}/api/v1/batches/{batch_id}", headers=stack.headers(), timeout=60).json()


def item_ids(stack, batch_id, count):
    with stack.session() as session:
        return list(session.scalars(select(Check.id).where(Check.batch_id == batch_id).order_by(Check.id)
                                    .limit(count)))


def wait_batch(stack, batch_id, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = batch_state(stack, batch_id)
        if state["status"] in ("done", "cancelled", "failed"):
            return state
        time.sleep(0.5)
    return state


env = backend_env(config["kind"], root)
env.update(config["env"])
env.update({"FAKEWATCH_STUCK_AFTER_S": "120", "FAKEWATCH_SWEEP_INTERVAL_S": "15"})  # production sweeper timings
stack = Stack(kind=config["kind"], env=env, data_dir=root)
result = {"env": config["env"]}
try:
    stack.run_cli("db", "upgrade")
    with stack.session() as session:
        register_model(session, SHIPPED_MODEL, activate=True)
    stack.api_key = stack.run_cli("keys", "create", "bench", "--role", "admin").stdout.strip().splitlines()[-1]
    port = free_port()
    stack.api_url = f"http://127.0.0.1:{port}"
    api = stack.start_process("api", "api", "--port", str(port))  # fakewatch api's own defaults (threads)
    wait_for_url(stack.api_url + "/healthz", api, lambda: stack.log_text("api"))
    stack.start_process("worker", "worker", "--concurrency", "2")
    deadline = time.monotonic() + 300
    while stack.log_text("worker").count("loaded and warm") < 2 and time.monotonic() < deadline:
        time.sleep(0.5)

    # 1. warm-up batch: every pool process has scored, and the idle pollers have checks to read
    started = time.monotonic()
    warm_id = submit_batch(stack, [f"{images_url}/warm/{i}.jpg" for i in range(clients)])
    state = wait_batch(stack, warm_id, config["busy_max_s"])
    result["warm_batch"] = {"seconds": round(time.monotonic() - started, 1), "done": state["done"],
                            "failed": state["failed"]}
    warm_items = item_ids(stack, warm_id, clients)

    # 2 and 3: the same pollers, idle then during a batch
    current = {"phase": "settle", "checks": warm_items, "batch": warm_id}
    def paths(i):
        return lambda: (f"/api/v1/checks/{current['checks'][i % len(current['checks'])]}",
                        f"/api/v1/batches/{current['batch']}")
    targets = [(paths(i),) for i in range(clients)]
    done_flag = {"stop": False}
    busy = {}

    async def scenario():
        task = asyncio.create_task(poll(stack, targets, lambda: done_flag["stop"],
                                        lambda: current["phase"] if current["phase"] in ("idle", "busy") else None,
                                        hz))
        await asyncio.sleep(2)  # every client connected and polling
        current["phase"] = "idle"; t = time.monotonic()
        await asyncio.sleep(config["idle_s"])
        busy["idle_s"] = time.monotonic() - t
        current["phase"] = "settle"
        urls = [f"{images_url}/busy/{i}.jpg" for i in range(config["images"])]
        t = time.monotonic()
        batch_id = await asyncio.to_thread(submit_batch, stack, urls)
        busy["accept_s"] = time.monotonic() - t
        current["checks"] = await asyncio.to_thread(item_ids, stack, batch_id, clients)
        current["batch"] = batch_id
        current["phase"] = "busy"
        while time.monotonic() - t < config["busy_max_s"]:
            state = await asyncio.to_thread(batch_state, stack, batch_id)
            if state["status"] in ("done", "cancelled", "failed"):
                break
            await asyncio.sleep(0.5)
        busy["seconds"] = time.monotonic() - t
        busy["state"] = state
        current["phase"] = "settle"
        done_flag["stop"] = True
        return await task

    latencies, errors = asyncio.run(scenario())
    state = busy["state"]
    result["idle"] = summary(latencies.get("idle", []), busy["idle_s"])
    result["during_batch"] = summary(latencies.get("busy", []), busy["seconds"])
    result["errors"] = errors
    result["batch"] = {"images": config["images"], "seconds": round(busy["seconds"], 1),
                       "images_per_s": round((state["done"] + state["failed"]) / busy["seconds"], 2),
                       "done": state["done"], "failed": state["failed"], "status": state["status"]}
    print("RESULT " + json.dumps(result), flush=True)

    # 4. cached re-check of the same bytes
    data = Path(config["cached_image"]).read_bytes()
    first = stack.post_image(data, wait=10).json()
    assert first["status"] == "done", first
    cached = []
    for _ in range(config["cached"]):
        t = time.perf_counter()
        response = stack.post_image(data, wait=10)
        cached.append(1000 * (time.perf_counter() - t))
        body = response.json()
        assert response.status_code == 200 and body["cached"], body
    result["cached_recheck"] = summary(cached)
    print("RESULT " + json.dumps(result), flush=True)

    # 5. a large batch accepted
    runs = []
    for run in range(config["accept_runs"]):
        urls = [f"{images_url}/absent/{run}/{i}.jpg" for i in range(config["accept_urls"])]
        t = time.perf_counter()
        response = requests.post(f"{stack.api_url}/api/v1/batches", headers=stack.headers(), json={"urls": urls},
                                 timeout=120)
        runs.append(round(time.perf_counter() - t, 3))
        assert response.status_code == 202, response.text[:500]
        requests.post(f"{stack.api_url}/api/v1/batches/{response.json()['id']}/cancel", headers=stack.headers(),
                      timeout=120)
        time.sleep(2)  # let the workers drop the cancelled items' messages before the next run
    result["accept"] = {"urls": config["accept_urls"], "median_s": statistics.median(runs) if runs else None,
                        "runs_s": runs}
    print("RESULT " + json.dumps(result), flush=True)
finally:
    stack.stop()
"""


def measure(tree: Path, config: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    return run_in_tree(tree, INNER, [json.dumps(config)], timeout_s)


def ratio(new: Any, old: Any) -> float | None:
    ok = isinstance(new, int | float) and isinstance(old, int | float) and old
    return round(float(new) / float(old), 2) if ok else None


def ratios(new: dict[str, Any], old: dict[str, Any]) -> dict[str, float | None]:
    def get(result: dict[str, Any], *keys: str) -> Any:
        for key in keys:
            result = result.get(key, {}) if isinstance(result, dict) else {}
        return result
    figures = {"idle_p95": ("idle", "p95_ms"), "during_batch_p95": ("during_batch", "p95_ms"),
               "during_batch_p50": ("during_batch", "p50_ms"), "batch_images_per_s": ("batch", "images_per_s"),
               "cached_recheck_p50": ("cached_recheck", "p50_ms"), "accept_median": ("accept", "median_s")}
    return {name: ratio(get(new, *keys), get(old, *keys)) for name, keys in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=None, help="a checkout of the landed code (omit: this tree only)")
    parser.add_argument("--backends", default="embedded", help="embedded, redis-postgres, or both comma-separated")
    parser.add_argument("--images", type=int, default=300, help="URLs in the batch scored while clients poll")
    parser.add_argument("--clients", type=int, default=100, help="polling clients, one connection each")
    parser.add_argument("--hz", type=float, default=2.0, help="polls a second per client")
    parser.add_argument("--idle-s", type=float, default=15.0, help="seconds of polling with no batch running")
    parser.add_argument("--busy-max-s", type=float, default=400.0, help="most seconds to wait for the batch")
    parser.add_argument("--cached", type=int, default=100, help="cached re-checks of the same bytes")
    parser.add_argument("--accept-urls", type=int, default=10_000, help="URLs in each accepted batch")
    parser.add_argument("--accept-runs", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="run this tree again with this extra environment (repeatable)")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per run at most")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    for name, value in (("--images", args.images), ("--clients", args.clients), ("--cached", args.cached),
                        ("--accept-urls", args.accept_urls)):
        if not 1 <= value <= 20_000:
            parser.error(f"{name} must be between 1 and 20000")
    if not 0 < args.hz <= 20 or not 0 < args.idle_s <= 600 or not 0 < args.busy_max_s <= 1800:
        parser.error("--hz must be in (0, 20], --idle-s in (0, 600], --busy-max-s in (0, 1800]")

    server = LocalServer()
    # Images a worker fetches: real photos at 384 px (distinct bytes, so every one is scored, none cached).
    photos = distinct_photos(args.clients + args.images + 1, size=384)
    for index in range(args.clients):
        server.routes[f"/warm/{index}.jpg"] = (200, {"Content-Type": "image/jpeg"}, photos[index])
    for index in range(args.images):
        server.routes[f"/busy/{index}.jpg"] = (200, {"Content-Type": "image/jpeg"}, photos[args.clients + index])
    runs: list[tuple[str, Path, dict[str, str]]] = []
    if args.base is not None:
        runs.append(("landed", args.base.resolve(), {}))
    runs.append(("this_tree", HERE, {}))
    for variant in args.variant:
        name, _, pairs = variant.partition(":")
        runs.append((name, HERE, dict(pair.split("=", 1) for pair in pairs.split(",") if pair)))
    result: dict[str, Any] = {"command": " ".join(sys.argv), "clients": args.clients, "hz": args.hz,
                              "images": args.images, "machine_cpus": os.cpu_count()}
    try:
        with tempfile.NamedTemporaryFile(suffix=".jpg") as cached_image:
            cached_image.write(photos[-1])
            cached_image.flush()
            for kind in args.backends.split(","):
                per_kind: dict[str, Any] = {}
                for name, tree, extra in runs:
                    config = {"kind": kind, "images_url": server.url("").rstrip("/"), "clients": args.clients,
                              "hz": args.hz, "idle_s": args.idle_s, "busy_max_s": args.busy_max_s,
                              "images": args.images, "cached": args.cached, "cached_image": cached_image.name,
                              "accept_urls": args.accept_urls, "accept_runs": args.accept_runs, "env": extra}
                    per_kind[name] = measure(tree, config, args.timeout)
                    print(kind, name, json.dumps(per_kind[name]), file=sys.stderr, flush=True)
                if "landed" in per_kind:
                    per_kind["ratios_over_landed"] = {name: ratios(per_kind[name], per_kind["landed"])
                                                      for name, _, _ in runs if name != "landed"}
                result[kind] = per_kind
    finally:
        server.close()
    emit(result, args.out)


if __name__ == "__main__":
    main()
