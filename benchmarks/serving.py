"""Benchmark the scoring path of two trees side by side and print JSON with ratios: this tree against the landed code
(another checkout, e.g. ``git worktree add /tmp/base d1c1a0c``), each on its own shipped model, in the same run.

For each tree, on the embedded default (SQLite database and broker), with a real API and real scoring workers:
- worker start to first verdict: an upload is queued with no worker running, then a worker (1 process) starts;
  the time from starting it to the stored verdict;
- one image end to end: sequential uploads of distinct images with ``?wait=10``, p50 and p90 (quiet machine
  advised);
- scoring worker memory: resident set of the worker's processes (main + pool) after it scored;
- images a second, file to stored verdict: ``--images`` distinct uploads on 2 worker processes, from the first POST
  to the last stored verdict (read from the database), with the CPU the API and the scoring worker (main + pool
  processes) spent per image meanwhile, and the same batch again while a pool process is killed every ``--kill-every`` s
  (the reliability benchmark's kill, at most 3 kills, scaled down): total time with kills over total time without;
- with ``--upload-batch N`` (this tree only: the landed code has no upload batches): ``--images`` other distinct
  files sent as upload batches of N files each (multipart ``files`` to ``POST /api/v1/batches``, one request after
  the other), from the first POST to the last batch done, on the same 2 worker processes;
- the tree's in-process limit: decode + score of the same images in one process, batches of 32; and the model's own
  time for one image (decode + score of one image alone, p50), which one image end to end is held against.

    python benchmarks/serving.py --base /tmp/base [--images 256] [--latency-images 20] [--kill-every 15]
                                 [--upload-batch 100] [--out benchmarks/serving-results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from testbed.report import emit
from testbed.trees import run_in_tree

HERE = Path(__file__).resolve().parents[1]

INNER = r"""
import io, json, os, signal, statistics, sys, threading, time
from pathlib import Path
import numpy as np, requests
from PIL import Image
from sqlalchemy import func, select
from backend.storage.schema import Check
from testbed.stack import Stack, backend_env, isolated_settings
from backend.training.versions import register_model
from core.model_metadata import SHIPPED_MODEL

count, latency_count, kill_every = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
files_per_batch, root = int(sys.argv[4]), Path(sys.argv[5])


def images(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        side = int(rng.choice([256, 384, 512, 640]))
        pixels = rng.integers(0, 255, (side // 8, side // 8, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC)
        buffer = io.BytesIO(); image.save(buffer, "JPEG", quality=88); out.append(buffer.getvalue())
    return out


def rss_mb(pid):
    total = 0
    for child in [pid, *[int(p) for p in os.popen(f"pgrep -P {pid}").read().split()]]:
        try:
            for line in open(f"/proc/{child}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def cpu_s(pid):
    # CPU seconds (user + system) of a process and its children (gunicorn's worker, Celery's pool processes): what a
    # stage costs on a loaded machine, where its rate moves with other people's jobs and its CPU does not.
    total = 0
    for child in [pid, *pool_children(pid)]:
        try:
            fields = open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def cpu_per_image(stack, before, count):
    return {name: round(1000 * (cpu_s(stack.processes[name].pid) - before[name]) / count, 1) for name in before}


def cpu_now(stack):
    return {name: cpu_s(stack.processes[name].pid) for name in ("api", "worker")}


def pool_children(pid):
    return [int(p) for p in os.popen(f"pgrep -P {pid}").read().split()]


def post(stack, data, wait=0):
    r = requests.post(f"{stack.api_url}/api/v1/checks", params={"wait": wait}, headers=stack.headers(),
                      files={"image": ("i.jpg", data)}, timeout=120)
    r.raise_for_status()
    return r.json()


# How many of these checks the database holds in each status: one query on the stack's own database. (Polling each
# pending check through the API every round had the API answer thousands of GETs while the workers scored.)
def stored_statuses(stack, ids):
    with stack.session() as session:
        return {str(getattr(status, "value", status)): count for status, count in session.execute(
            select(Check.status, func.count()).where(Check.id.in_(list(ids))).group_by(Check.status))}


def wait_all(stack, ids, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = stored_statuses(stack, ids)
        if sum(statuses.get(s, 0) for s in ("done", "failed", "cancelled")) == len(ids):
            return True
        time.sleep(0.05)
    return False


def run_batch(stack, data, kill_pid=None):
    before = cpu_now(stack)
    started = time.monotonic()
    ids = []
    lock = threading.Lock()
    def poster(part):
        for d in part:
            cid = post(stack, d)["id"]
            with lock:
                ids.append(cid)
    threads = [threading.Thread(target=poster, args=(data[i::4],)) for i in range(4)]
    for t in threads: t.start()
    kills, stop = [], threading.Event()
    def killer():
        while len(kills) < 3 and not stop.wait(kill_every):  # at most 3 kills, as benchmarks/reliability.py
            children = pool_children(kill_pid)
            if children:
                os.kill(children[0], signal.SIGKILL); kills.append(round(time.monotonic() - started, 1))
    if kill_pid:
        threading.Thread(target=killer, daemon=True).start()
    for t in threads: t.join()
    finished = wait_all(stack, ids)
    stop.set()
    seconds = time.monotonic() - started
    statuses = stored_statuses(stack, ids)
    return {"seconds": round(seconds, 2), "images_per_s": round(len(data) / seconds, 2), "statuses": statuses,
            "finished": finished, "kills_at_s": kills, "cpu_ms_per_image": cpu_per_image(stack, before, len(data))}


def run_upload_batches(stack, data):
    before = cpu_now(stack)
    started = time.monotonic()
    ids = []
    for start in range(0, len(data), files_per_batch):
        part = data[start:start + files_per_batch]
        r = requests.post(f"{stack.api_url}/api/v1/batches", headers=stack.headers(), timeout=600,
                          files=[("files", (f"{start + i}.jpg", d)) for i, d in enumerate(part)])
        r.raise_for_status()
        ids.append(r.json()["id"])
    accepted_s = time.monotonic() - started
    with stack.session() as session:
        items = list(session.scalars(select(Check.id).where(Check.batch_id.in_(ids))))
    finished = wait_all(stack, items)
    seconds = time.monotonic() - started
    return {"seconds": round(seconds, 2), "images_per_s": round(len(data) / seconds, 2),
            "statuses": stored_statuses(stack, items), "finished": finished, "files_per_request": files_per_batch,
            "accepted_s": round(accepted_s, 2), "cpu_ms_per_image": cpu_per_image(stack, before, len(data))}


stack = Stack(kind="embedded", env=backend_env("embedded", root), data_dir=root)
stack.env["FAKEWATCH_STUCK_AFTER_S"] = "30"
stack.run_cli("db", "upgrade")
with stack.session() as session:
    register_model(session, SHIPPED_MODEL, activate=True)
stack.api_key = stack.run_cli("keys", "create", "bench", "--role", "admin").stdout.strip().splitlines()[-1]
stack.start_api()
result = {}
try:
    first = post(stack, images(1, 99)[0])
    began = time.monotonic()
    worker = stack.start_process("worker", "worker", "--concurrency", "1")
    check = stack.wait_for_check(first["id"], timeout=300)
    result["worker_start_to_first_verdict_s"] = round(time.monotonic() - began, 2)
    assert check["status"] == "done", check
    stack.start_process("callbacks-worker", "worker", "--queues", "callbacks", "--concurrency", "1")
    stack.wait_for_log("callbacks-worker", "ready.", timeout=300)  # its start-up is not measured as latency
    latencies = []
    for data in images(latency_count, 1):
        t = time.monotonic(); body = post(stack, data, wait=10); latencies.append(1000 * (time.monotonic() - t))
        assert body["status"] == "done", body
    print("RESULT " + json.dumps(result), flush=True)
    result["one_image_ms"] = {"p50": round(statistics.median(latencies), 1),
                              "p90": round(sorted(latencies)[int(0.9 * (len(latencies) - 1))], 1)}
    result["worker_rss_mb_1_process"] = rss_mb(worker.pid)
    stack.stop_process("worker")
    warm_before = stack.log_text("worker").count("loaded and warm")
    worker = stack.start_process("worker", "worker", "--concurrency", "2")
    deadline = time.monotonic() + 600
    while stack.log_text("worker").count("loaded and warm") < warm_before + 2 and time.monotonic() < deadline:
        time.sleep(0.5)  # both pool processes hold the model: the batch below measures scoring, not start-up
    warm = post(stack, images(1, 98)[0], wait=10)
    batch = images(count, 2)
    result["batch_2_workers"] = run_batch(stack, batch)
    result["worker_rss_mb_2_processes"] = rss_mb(worker.pid)
    print("RESULT " + json.dumps(result), flush=True)
    if files_per_batch > 0:
        result["upload_batches_2_workers"] = run_upload_batches(stack, images(count, 4))
        print("RESULT " + json.dumps(result), flush=True)
    if kill_every > 0:  # --kill-every 0 (or --no-kills) leaves the kill run out
        result["batch_2_workers_with_kills"] = run_batch(stack, images(count, 3), kill_pid=worker.pid)
        result["kill_run_time_ratio"] = round(result["batch_2_workers_with_kills"]["seconds"]
                                              / result["batch_2_workers"]["seconds"], 2)
        print("RESULT " + json.dumps(result), flush=True)
finally:
    stack.stop()

from core.decoding import decode_image
from models.serving import Detector
limits = isolated_settings().image_limits
detector = Detector.load(SHIPPED_MODEL)
detector.score([decode_image(batch[0], limits)])
t = time.monotonic()
for s in range(0, len(batch), 32):
    detector.score([decode_image(d, limits) for d in batch[s:s + 32]])
result["in_process_limit_images_per_s"] = round(len(batch) / (time.monotonic() - t), 2)
one = []  # the model's own time for one image (decode + score, alone): what one_image_ms is held against
for data in images(max(latency_count, 5), 1):
    t = time.monotonic(); detector.score([decode_image(data, limits)]); one.append(1000 * (time.monotonic() - t))
result["model_one_image_ms_p50"] = round(statistics.median(one), 1)
result["model"] = detector.version
print("RESULT " + json.dumps(result))
"""


def measure(tree: Path, count: int, latency_count: int, kill_every: float, files_per_batch: int,
            timeout_s: float) -> dict[str, Any]:
    return run_in_tree(tree, INNER, [str(count), str(latency_count), str(kill_every), str(files_per_batch)], timeout_s,
                       env={"TF_CPP_MIN_LOG_LEVEL": "3"})


def ratio(new: Any, old: Any) -> float | None:
    return round(float(new) / float(old), 2) if isinstance(new, int | float) and isinstance(old, int | float) and old else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="a checkout of the landed code")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--latency-images", type=int, default=20)
    parser.add_argument("--kill-every", type=float, default=15.0)
    parser.add_argument("--no-kills", action="store_true", help="leave out the run with pool processes killed")
    parser.add_argument("--upload-batch", type=int, default=0, metavar="N",
                        help="also send the images as upload batches of N files (this tree only)")
    parser.add_argument("--timeout", type=float, default=3000,
                        help="seconds per tree at most (a last resort: each batch gives up after 600 s)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.no_kills:
        args.kill_every = 0.0
    result: dict[str, Any] = {"command": " ".join(sys.argv), "images": args.images}
    for name, tree in (("landed", args.base.resolve()), ("this_tree", HERE)):
        files_per_batch = args.upload_batch if name == "this_tree" else 0
        result[name] = measure(tree, args.images, args.latency_images, args.kill_every, files_per_batch, args.timeout)
        print(name, json.dumps(result[name]), file=sys.stderr)
    new, old = result["this_tree"], result["landed"]
    result["ratios_this_over_landed"] = {
        "images_per_s_2_workers": ratio(new.get("batch_2_workers", {}).get("images_per_s"),
                                        old.get("batch_2_workers", {}).get("images_per_s")),
        "worker_start_to_first_verdict": ratio(new.get("worker_start_to_first_verdict_s"),
                                               old.get("worker_start_to_first_verdict_s")),
        "one_image_p50": ratio(new.get("one_image_ms", {}).get("p50"), old.get("one_image_ms", {}).get("p50")),
        "worker_rss_1_process": ratio(new.get("worker_rss_mb_1_process"), old.get("worker_rss_mb_1_process")),
        "in_process_limit": ratio(new.get("in_process_limit_images_per_s"), old.get("in_process_limit_images_per_s")),
    }
    limit = new.get("in_process_limit_images_per_s")
    rate = new.get("batch_2_workers", {}).get("images_per_s")
    result["this_tree_batch_rate_over_its_in_process_limit"] = ratio(rate, limit)
    if args.upload_batch:
        uploads = new.get("upload_batches_2_workers", {}).get("images_per_s")
        result["this_tree_upload_batches_over_its_in_process_limit"] = ratio(uploads, limit)
        result["ratios_this_over_landed"]["upload_batches_over_landed_single_uploads"] = ratio(
            uploads, old.get("batch_2_workers", {}).get("images_per_s"))
    one, own = new.get("one_image_ms", {}).get("p50"), new.get("model_one_image_ms_p50")
    result["this_tree_one_image_p50_over_model_ms"] = round(one - own, 1) if one and own else None
    emit(result, args.out)


if __name__ == "__main__":
    main()
