"""Benchmark near-duplicate matching (PDQ hashes in a faiss index) and print JSON: recall on copies, false matches
between distinct images, lookup speed at a million hashes, hashing cost beside the model's.

- Recall: images drawn with a fixed seed from the test splits of every set, four copies each (half size bicubic,
  JPEG quality 60, a centred crop keeping 90% of each side, a "screenshot": 0.8x bilinear saved as PNG), each looked
  up in an index of every distinct image of the data; a copy counts when its original is among the matches.
- False matches: distinct images from all splits; the share with any other image within the distance, leaving out
  pairs the data says are true near-copies (the same source file or prompt in a set's manifest.csv; the same file
  name in the sets without one, whose names are their source clips or photos). Every pair left within 31 is listed.
- Tiny copies: the same originals shrunk to a few pixels a side, to show what the size floor (MIN_SIDE) guards.
- Speed: lookups p50/p95 against 1,000,000 random hashes, with faiss's multi-hash index measured beside the flat one
  this module uses; the time to build each; their memory; PDQ hashing per image beside the model's scoring.

    .venv/bin/python benchmarks/matching.py [--data /work/shared/data] [--model models/shipped/default.keras]
        > benchmarks/matching-results.json
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.matching.index import Match, NearDuplicateIndex
from backend.matching.pdq import MATCH_DISTANCE, MIN_QUALITY, MIN_SIDE, PdqHash, hamming_distance, hash_image
from core.decoding import LOCAL_FILES, decode_image

SEED = 0
SPLITS = ("test", "train", "valid")
CLASSES = ("real", "fake")
COPY_KINDS = ("half_bicubic", "jpeg_q60", "crop_90", "screenshot_png")
TINY_SIDES = (64, 48, 32, 24, 16)
FALSE_MATCH_LEVEL = 0.001  # the 0.1% the issue asks about
# Sets with no record of which images share a source. faces-faceswap holds one frame per DFDC clip, and DFDC made
# several face swaps of each original clip with the same actors in the same rooms: every pair within 31 there
# that was looked at is the same person in the same scene and pose, so its pairs are reported apart.
UNRECORDED_SOURCES = ("faces-faceswap",)


@dataclass(frozen=True)
class Source:
    path: Path
    dataset: str
    split: str
    label: str
    group: str  # images sharing a group are true near-copies by the data's own account
    sha256: str


@dataclass
class Hashed:
    source: Source
    size: tuple[int, int]
    pdq: PdqHash
    hash_ms: float

    def load(self) -> Image.Image:
        """Decoded again when needed: holding every decoded photo (some 4600 px) would take gigabytes."""
        return decode_image(self.source.path.read_bytes(), LOCAL_FILES)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {"n": int(array.size), "p50": round(float(np.percentile(array, 50)), 2),
            "p95": round(float(np.percentile(array, 95)), 2), "p99": round(float(np.percentile(array, 99)), 2),
            "max": round(float(array.max()), 2), "mean": round(float(array.mean()), 2)}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- the data ---------------------------------------------------------------------------------------------------


def manifest_groups(dataset_dir: Path) -> dict[str, str]:
    """File name -> its source group (prompt or source file), from the set's manifest.csv where there is one."""
    manifest = dataset_dir / "manifest.csv"
    if not manifest.exists():
        return {}
    with manifest.open(newline="") as handle:
        return {row["name"]: row["group"] for row in csv.DictReader(handle)}


def inventory(data: Path) -> tuple[list[Source], dict[str, Any]]:
    """Every image file once per distinct content (SHA-256), test splits first so a file in two splits counts as
    test; and counts of what was folded."""
    seen: set[str] = set()
    sources: list[Source] = []
    files = 0
    for dataset_dir in sorted(p for p in data.iterdir() if p.is_dir()):
        groups = manifest_groups(dataset_dir)
        for split in SPLITS:
            for label in CLASSES:
                folder = dataset_dir / split / label
                for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                    files += 1
                    sha = hashlib.sha256(path.read_bytes()).hexdigest()
                    if sha in seen:
                        continue
                    seen.add(sha)
                    # No manifest: the file name is the source (a DFDC clip id, a photo's name).
                    group = groups.get(path.name) or path.stem
                    sources.append(Source(path, dataset_dir.name, split, label, f"{dataset_dir.name}:{group}", sha))
    per_set = Counter(s.dataset for s in sources)
    return sources, {"files": files, "distinct_by_sha256": len(sources), "distinct_per_dataset": dict(per_set),
                     "with_manifest": sorted(d.name for d in data.iterdir() if (d / "manifest.csv").exists())}


def hash_sources(sources: list[Source]) -> list[Hashed]:
    out = []
    for number, source in enumerate(sources, start=1):
        image = decode_image(source.path.read_bytes(), LOCAL_FILES)
        started = time.perf_counter()
        pdq = hash_image(image)
        out.append(Hashed(source, image.size, pdq, (time.perf_counter() - started) * 1000))
        if number % 1000 == 0:
            log(f"hashed {number}/{len(sources)}")
    return out


# --- recall on copies -------------------------------------------------------------------------------------------


def reencode(image: Image.Image, fmt: str, **options: Any) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return decode_image(buffer.getvalue(), LOCAL_FILES)


def make_copy(image: Image.Image, kind: str) -> Image.Image:
    width, height = image.size
    if kind == "half_bicubic":
        return image.resize((max(1, width // 2), max(1, height // 2)), Image.Resampling.BICUBIC)
    if kind == "jpeg_q60":
        return reencode(image, "JPEG", quality=60)
    if kind == "crop_90":
        left, top = round(width * 0.05), round(height * 0.05)
        return image.crop((left, top, left + round(width * 0.9), top + round(height * 0.9)))
    if kind == "screenshot_png":
        return reencode(image.resize((round(width * 0.8), round(height * 0.8)), Image.Resampling.BILINEAR), "PNG")
    raise ValueError(kind)


def shrink(image: Image.Image, side: int) -> Image.Image:
    """The image with its shorter side at ``side`` pixels, as a thumbnail is."""
    scale = side / min(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.BICUBIC)


def measure_recall(hashed: list[Hashed], count: int) -> dict[str, Any]:
    """Copies of test images looked up among every distinct image of the data."""
    index = NearDuplicateIndex.from_rows((i, h.pdq.hex, h.pdq.quality) for i, h in enumerate(hashed))
    test_ids = [i for i, h in enumerate(hashed) if h.source.split == "test"]
    rng = np.random.default_rng(SEED)
    drawn = sorted(rng.choice(len(test_ids), size=min(count, len(test_ids)), replace=False).tolist())
    originals = [test_ids[i] for i in drawn]
    report: dict[str, Any] = {"images": len(originals), "test_pool": len(test_ids), "index_size": len(index),
                              "originals_low_quality": sum(not hashed[i].pdq.is_matchable() for i in originals),
                              "drawn_per_dataset": dict(Counter(hashed[i].source.dataset for i in originals))}
    copies: dict[str, list[PdqHash]] = {kind: [] for kind in COPY_KINDS}
    tiny: dict[int, list[PdqHash]] = {side: [] for side in TINY_SIDES}
    for original in originals:
        image = hashed[original].load()
        for kind in COPY_KINDS:
            copies[kind].append(hash_image(make_copy(image, kind)))
        for side in TINY_SIDES:
            tiny[side].append(hash_image(shrink(image, side), min_side=0))
    kinds: dict[str, Any] = {}
    for kind in COPY_KINDS:
        kinds[kind] = recall_entry(hashed, originals, copies[kind], index.query_many(copies[kind]))
        log(f"recall {kind}: {kinds[kind]['recall']}")
    report["copies"] = kinds
    report["target_met"] = all(kinds[k]["recall"] >= 0.95 for k in ("half_bicubic", "jpeg_q60", "screenshot_png"))
    report["tiny_copies"] = measure_tiny(hashed, originals, tiny)
    return report


def recall_entry(hashed: list[Hashed], originals: list[int], copies: list[PdqHash],
                 answers: list[list[Match]]) -> dict[str, Any]:
    matched = [any(m.id == original for m in found) for original, found in zip(originals, answers, strict=True)]
    nearest = [bool(found) and found[0].id == original for original, found in zip(originals, answers, strict=True)]
    distances = [hamming_distance(hashed[o].pdq.hex, c.hex) for o, c in zip(originals, copies, strict=True)]
    per_set: dict[str, list[bool]] = defaultdict(list)
    for original, hit in zip(originals, matched, strict=True):
        per_set[hashed[original].source.dataset].append(hit)
    usable = [hashed[o].pdq.is_matchable() for o in originals]
    misses = Counter("original under the quality floor" if not ok_original else "copy under the quality floor"
                     if not copy.is_matchable() else f"distance over {MATCH_DISTANCE}"
                     for ok_original, copy, hit in zip(usable, copies, matched, strict=True) if not hit)
    return {"recall": round(float(np.mean(matched)), 4), "matched": int(sum(matched)), "of": len(matched),
            "recall_of_matchable_originals": round(sum(matched) / max(1, sum(usable)), 4),
            "misses": dict(misses), "nearest_is_original": round(float(np.mean(nearest)), 4),
            "distance_to_original": percentiles([float(d) for d in distances]),
            "recall_per_dataset": {name: round(float(np.mean(hits)), 4) for name, hits in sorted(per_set.items())}}


def measure_tiny(hashed: list[Hashed], originals: list[int], tiny: dict[int, list[PdqHash]]) -> dict[str, Any]:
    """Shrunk copies with the size floor lifted: how often each still sits within 31 of its original, and how often
    within 31 of an unrelated image (what the floor prevents). Unrelated: another source group, and not a pair
    inside UNRECORDED_SOURCES; "full size" is the same count for the originals themselves."""
    index = NearDuplicateIndex.from_rows((i, h.pdq.hex, h.pdq.quality) for i, h in enumerate(hashed))

    def unrelated(original: int, found: list[Match]) -> bool:
        source = hashed[original].source
        return any(other.group != source.group and not (other.dataset == source.dataset in UNRECORDED_SOURCES)
                   for other in (hashed[m.id].source for m in found))

    full = index.query_many([PdqHash(hashed[o].pdq.hex, None) for o in originals])
    out: dict[str, Any] = {"min_side": MIN_SIDE, "full size": {
        "any_unrelated_within_31": round(float(np.mean([unrelated(o, f) for o, f in zip(originals, full, strict=True)])), 4)}}
    for side, copies in tiny.items():
        answers = index.query_many([PdqHash(c.hex, None) for c in copies])
        within = [hamming_distance(hashed[o].pdq.hex, c.hex) <= MATCH_DISTANCE for o, c in zip(originals, copies, strict=True)]
        out[f"{side} px"] = {"within_31_of_original": round(float(np.mean(within)), 4),
                             "any_unrelated_within_31": round(float(np.mean([unrelated(o, f) for o, f in
                                                                             zip(originals, answers, strict=True)])), 4),
                             "pdq_quality_p50": float(np.median([c.quality or 0 for c in copies]))}
    return out


# --- false matches ----------------------------------------------------------------------------------------------


def measure_false_matches(hashed: list[Hashed], count: int) -> dict[str, Any]:
    """Distinct images against each other, under the data's own near-copy groups; then again leaving out every pair
    inside a set whose source clips are not recorded (UNRECORDED_SOURCES)."""
    rng = np.random.default_rng(SEED + 1)
    drawn = sorted(rng.choice(len(hashed), size=min(count, len(hashed)), replace=False).tolist())
    pool = [hashed[i] for i in drawn]
    kept = [h for h in pool if h.pdq.is_matchable()]
    bits = np.unpackbits(np.frombuffer(b"".join(bytes.fromhex(h.pdq.hex) for h in kept), dtype=np.uint8)
                         .reshape(len(kept), 32), axis=1).astype(np.float32)
    ones = bits.sum(axis=1)
    distances = np.rint(ones[:, None] + ones[None, :] - 2 * (bits @ bits.T)).astype(np.int32)
    group_ids: dict[str, int] = {}
    groups = np.array([group_ids.setdefault(h.source.group, len(group_ids)) for h in kept])
    excluded = groups[:, None] == groups[None, :]  # the diagonal too
    excluded_pairs = int((excluded.sum() - len(kept)) // 2)
    distances[excluded] = 10_000
    report: dict[str, Any] = {
        "drawn": len(pool), "available_distinct": len(hashed), "low_quality_left_out": len(pool) - len(kept),
        "compared": len(kept), "excluded_same_source_pairs": excluded_pairs,
        "by_manifest_groups": false_match_figures(distances),
    }
    cross_check = index_cross_check(kept, groups)
    assert cross_check == report["by_manifest_groups"]["images_with_a_match_within_31"], "index and matrix disagree"
    report["pairs_within_31"] = pairs_within(kept, distances)
    unrecorded = np.array([h.source.dataset in UNRECORDED_SOURCES for h in kept])
    distances[unrecorded[:, None] & unrecorded[None, :]] = 10_000
    report["leaving_out_pairs_inside_" + "_".join(UNRECORDED_SOURCES)] = false_match_figures(distances)
    return report


def false_match_figures(distances: np.ndarray) -> dict[str, Any]:
    """From a matrix whose excluded pairs hold a huge distance: the share of images with any match, by distance."""
    nearest = distances.min(axis=1)
    share_at_31 = float(np.mean(nearest <= MATCH_DISTANCE))
    reaches = next((d for d in range(257) if np.mean(nearest <= d) >= FALSE_MATCH_LEVEL), None)
    below = [d for d in range(257) if np.mean(nearest <= d) <= FALSE_MATCH_LEVEL]
    return {
        "images_with_a_match_within_31": int(np.sum(nearest <= MATCH_DISTANCE)),
        "share_with_a_match_within_31": round(share_at_31, 5), "target_under_0.5pct_met": share_at_31 < 0.005,
        "smallest_distance_where_share_reaches_0.1pct": reaches,
        "largest_distance_with_share_at_most_0.1pct": max(below) if below else None,
        "share_by_distance": {str(d): round(float(np.mean(nearest <= d)), 5) for d in range(0, 81, 2)},
        "nearest_other_distance": percentiles([float(d) for d in np.minimum(nearest, 256)]),
    }


def index_cross_check(kept: list[Hashed], groups: np.ndarray) -> int:
    """The same count through NearDuplicateIndex, so the figure is the index's, not only the matrix's."""
    index = NearDuplicateIndex.from_rows((i, h.pdq.hex, h.pdq.quality) for i, h in enumerate(kept))
    answers = index.query_many([h.pdq for h in kept])
    return sum(any(groups[m.id] != groups[i] for m in found) for i, found in enumerate(answers))


def pairs_within(kept: list[Hashed], distances: np.ndarray) -> list[dict[str, Any]]:
    rows, cols = np.nonzero(np.triu(distances <= MATCH_DISTANCE, k=1))
    pairs = []
    for a, b in sorted(zip(rows.tolist(), cols.tolist(), strict=True), key=lambda p: distances[p[0], p[1]]):
        first, second = kept[a].source, kept[b].source
        pairs.append({"distance": int(distances[a, b]),
                      "a": f"{first.dataset}/{first.split}/{first.label}/{first.path.name}",
                      "b": f"{second.dataset}/{second.split}/{second.label}/{second.path.name}"})
    return pairs


# --- speed ------------------------------------------------------------------------------------------------------


def synthetic_queries(codes: np.ndarray, count: int, rng: np.random.Generator) -> list[PdqHash]:
    """Half near-copies of stored hashes (10 to 30 bits flipped), half unrelated random hashes."""
    queries = []
    for number in range(count):
        if number % 2 == 0:
            bits = np.unpackbits(codes[rng.integers(len(codes))])
            bits[rng.choice(256, size=int(rng.integers(10, 31)), replace=False)] ^= 1
            queries.append(PdqHash(np.packbits(bits).tobytes().hex(), 100))
        else:
            queries.append(PdqHash(rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex(), 100))
    return queries


def timed_ms(function: Callable[[Any], Any], arguments: list[Any],
             cpu_ms: list[float] | None = None) -> tuple[list[Any], list[float]]:
    """Call ``function`` on each argument in turn; its results and the wall milliseconds each call took, and, into
    ``cpu_ms``, the CPU milliseconds of this thread (what a call costs, without the waits for a busy machine)."""
    results, times = [], []
    for argument in arguments:
        started, cpu_started = time.perf_counter(), time.thread_time()
        results.append(function(argument))
        times.append((time.perf_counter() - started) * 1000)
        if cpu_ms is not None:
            cpu_ms.append((time.thread_time() - cpu_started) * 1000)
    return results, times


def measure_lookups(size: int, lookups: int, rounds: int = 3) -> dict[str, Any]:
    """The flat index this module uses and faiss's multi-hash index, built from the same hashes; their lookups
    interleaved, so both meet the same load on a shared machine."""
    import faiss

    rng = np.random.default_rng(SEED + 2)
    codes = rng.integers(0, 256, (size, 32), dtype=np.uint8)
    hexes = [row.tobytes().hex() for row in codes]
    queries = synthetic_queries(codes, lookups, rng)
    before, started = rss_mb(), time.perf_counter()
    index = NearDuplicateIndex.from_rows((i, h, 100) for i, h in enumerate(hexes))
    flat_build_s, flat_mb = time.perf_counter() - started, rss_mb() - before
    before, started = rss_mb(), time.perf_counter()
    # 16 tables of 16 bits with one flipped bit probed: a hash within 31 agrees with the query to within one bit
    # on at least one of the 16 slices (16 x 2 > 31), so this configuration is exact too.
    multi = faiss.IndexBinaryMultiHash(256, 16, 16)
    multi.nflip = 1
    multi.add(codes)
    multi_build_s, multi_mb = time.perf_counter() - started, rss_mb() - before
    query_codes = [np.frombuffer(bytes.fromhex(q.hex), dtype=np.uint8).reshape(1, 32) for q in queries]
    index.query(queries[0])  # first touch of the pages
    flat_ms: list[float] = []
    multi_ms: list[float] = []
    flat_cpu_ms: list[float] = []
    multi_cpu_ms: list[float] = []
    agree = True
    load_before = os.getloadavg()[0]
    for _ in range(rounds):
        for query, code in zip(queries, query_codes, strict=True):
            answers, times = timed_ms(index.query, [query], flat_cpu_ms)
            flat_ms += times
            found, times = timed_ms(lambda c: multi.range_search(c, MATCH_DISTANCE + 1), [code], multi_cpu_ms)
            multi_ms += times
            agree &= sorted(m.id for m in answers[0]) == sorted(found[0][2].tolist())
    flat: dict[str, Any] = {
        "index": "faiss IndexBinaryIDMap(IndexBinaryFlat(256)), exact (used)", "build_from_hex_rows_s":
        round(flat_build_s, 2), "lookup_ms": percentiles(flat_ms), "lookup_cpu_ms": percentiles(flat_cpu_ms),
        "memory_mb": {"hashes_and_ids": round(index.memory_bytes / 2**20, 1), "rss_growth": round(flat_mb, 1)}}
    multihash = {"index": "faiss IndexBinaryMultiHash(256, nhash=16, b=16), nflip=1, exact within 31",
                 "build_s": round(multi_build_s, 2), "lookup_ms": percentiles(multi_ms),
                 "lookup_cpu_ms": percentiles(multi_cpu_ms),
                 "memory_mb": {"rss_growth": round(multi_mb, 1)}, "same_answers_as_flat": agree}
    return {"stored": size, "lookups": len(flat_ms), "queries": "half near-copies of stored hashes, half random",
            "faiss_threads": 1, "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "flat": flat, "multihash": multihash, "target_p95_under_20ms_met": flat["lookup_ms"]["p95"] < 20}


def measure_hashing(hashed: list[Hashed], model: Path | None) -> dict[str, Any]:
    by_size: dict[str, list[float]] = defaultdict(list)
    for h in hashed:
        side = max(h.size)
        band = "<=128px" if side <= 128 else "129-512px" if side <= 512 else ">512px"
        by_size[band].append(h.hash_ms)
    report: dict[str, Any] = {"pdq_ms_per_image": percentiles([h.hash_ms for h in hashed]),
                              "pdq_ms_by_long_side": {band: percentiles(v) for band, v in sorted(by_size.items())},
                              "working_side_check": working_side_check(hashed)}
    if model is not None and model.exists():
        report["model_ms_per_image"] = model_speed(model, [h.load() for h in hashed[::max(1, len(hashed) // 60)]])
    return report


def working_side_check(hashed: list[Hashed], count: int = 30) -> dict[str, Any]:
    """Large photos hashed whole by pdqhash against the 512 px working copy hash_image uses: bits lost, time saved."""
    import pdqhash

    large = [h for h in hashed if min(h.size) >= 2 * 512][:count]
    if not large:
        return {"images": 0}
    gaps, full_ms = [], []
    for h in large:
        image = np.asarray(h.load())
        started = time.perf_counter()
        bits, _ = pdqhash.compute(image)
        full_ms.append((time.perf_counter() - started) * 1000)
        gaps.append(float(hamming_distance(np.packbits(bits.astype(np.uint8)).tobytes().hex(), h.pdq.hex)))
    return {"images": len(large), "distance_full_vs_working_copy": percentiles(gaps),
            "full_size_ms": percentiles(full_ms), "working_copy_ms": percentiles([h.hash_ms for h in large])}


def model_speed(model: Path, images: list[Image.Image]) -> dict[str, Any]:
    from models.cli import configure_tensorflow
    from models.serving import Detector

    configure_tensorflow(2)
    detector = Detector.load(model)
    detector.score(images[:1])  # trace the graph once
    _, times = timed_ms(lambda image: detector.score([image]), images)
    return {"model": detector.version, "single_image_ms": percentiles(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--model", type=Path, default=ROOT / "models/shipped/default.keras")
    parser.add_argument("--recall-images", type=int, default=500)
    parser.add_argument("--distinct-images", type=int, default=5000)
    parser.add_argument("--stored", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=500)
    args = parser.parse_args()
    started = time.perf_counter()
    sources, counts = inventory(args.data)
    log(f"{counts['distinct_by_sha256']} distinct images of {counts['files']} files")
    hashed = hash_sources(sources)
    result: dict[str, Any] = {
        "settings": {"max_distance": MATCH_DISTANCE, "min_quality": MIN_QUALITY, "min_side": MIN_SIDE,
                     "seed": SEED},
        "environment": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                        "python": platform.python_version(), "pdqhash": metadata.version("pdqhash"),
                        "faiss_cpu": metadata.version("faiss-cpu")},
        "data": counts | {"under_the_quality_floor": dict(Counter(h.source.dataset for h in hashed
                                                                    if not h.pdq.is_matchable()))},
    }
    result["recall"] = measure_recall(hashed, args.recall_images)
    result["false_matches"] = measure_false_matches(hashed, args.distinct_images)
    log("false matches done")
    result["lookup_speed_1m"] = measure_lookups(args.stored, args.lookups)
    log("lookups done")
    result["hashing"] = measure_hashing(hashed, args.model)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
