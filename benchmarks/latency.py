"""Single-check latency, end to end through a real API and worker: POST an image with ?wait=10 until the verdict.

Measures p50/p95 over distinct images (each scored by the model), then re-submits the same bytes (answered from
cache), on the embedded default and on Redis + PostgreSQL. Prints JSON.

    .venv/bin/python benchmarks/latency.py [--count 200] [--model models/shipped/default.keras]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.model_metadata import SHIPPED_MODEL
from testbed.images import distinct_photos
from testbed.stack import Stack, start_stack


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(latencies_ms: list[float]) -> dict[str, float]:
    return {"n": len(latencies_ms), "p50_ms": round(percentile(latencies_ms, 0.5), 1),
            "p95_ms": round(percentile(latencies_ms, 0.95), 1), "mean_ms": round(statistics.fmean(latencies_ms), 1),
            "max_ms": round(max(latencies_ms), 1)}


def time_posts(stack: Stack, images: list[bytes], expect_cached: bool) -> list[float]:
    latencies = []
    for data in images:
        start = time.perf_counter()
        response = stack.post_image(data, wait=10)
        elapsed = (time.perf_counter() - start) * 1000
        body = response.json()
        if response.status_code != 200 or body["status"] != "done" or body["cached"] != expect_cached:
            raise RuntimeError(f"unexpected answer {response.status_code}: {body}")
        latencies.append(elapsed)
    return latencies


def measure(kind: str, model: Path, count: int, size: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(kind, Path(tmp), model)
        try:
            warm = distinct_photos(count + 10, size=size)
            time_posts(stack, warm[:10], expect_cached=False)  # worker warm-up: first calls build TF graphs
            images = warm[10:]
            fresh = time_posts(stack, images, expect_cached=False)
            cached = time_posts(stack, images, expect_cached=True)
            return {"scored": summarise(fresh), "cached": summarise(cached)}
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="distinct images per backend")
    parser.add_argument("--size", type=int, default=384, help="side of each JPEG in pixels")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--backends", default="redis-postgres,embedded")
    args = parser.parse_args()
    results: dict[str, object] = {"model": str(args.model), "image_px": args.size, "count": args.count}
    for kind in args.backends.split(","):
        print(f"measuring {kind}...", file=sys.stderr)
        results[kind] = measure(kind, args.model, args.count, args.size)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
