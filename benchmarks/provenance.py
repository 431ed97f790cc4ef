"""Benchmark the provenance reader and print JSON: milliseconds per image (p50, p95) for photos without
metadata, photos with metadata but no manifest, and files with a C2PA manifest; beside the shipped model's time
per image, for scale. Target: p50 under 5 ms for images without a manifest.

    python benchmarks/provenance.py [--data /work/shared/data] [--files 400] [--repeats 5] [--skip-model]

Files without metadata are the shared test splits (read in place, never copied); files with metadata are the
C2PA fixtures, and photos from skimage with EXIF, XMP and PNG text written into them here, in memory.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.provenance import read_provenance
from testbed.provenance_files import FIXTURES, exif_bytes, source_type_xmp

TARGET_P50_MS = 5.0
A1111 = ("a photo of a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, "
         "Size: 512x512, Model: v1-5-pruned-emaonly")


def files_without_metadata(data: Path, count: int) -> list[Path]:
    files = sorted(data.glob("*/test/*/*"))
    rng = np.random.default_rng(0)
    return [files[i] for i in sorted(rng.choice(len(files), size=min(count, len(files)), replace=False))]


def photos_with_metadata() -> dict[str, bytes]:
    """Real photos (skimage) as a camera, an editor or a generator would save them, plus A.jpg."""
    import skimage.data
    from PIL import Image, PngImagePlugin

    def save(name: str, fmt: str, **args: Any) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(buffer, fmt, **args)
        return buffer.getvalue()

    comfy = PngImagePlugin.PngInfo()
    comfy.add_text("prompt", json.dumps({"3": {"class_type": "KSampler", "inputs": {"steps": 20}}}))
    comfy.add_text("workflow", json.dumps({"last_node_id": 9, "nodes": [{"id": 3}] * 40}), zip=True)
    a1111 = PngImagePlugin.PngInfo()
    a1111.add_text("parameters", A1111)
    return {
        "A.jpg (Lightroom EXIF + XMP)": (FIXTURES / "A.jpg").read_bytes(),
        "astronaut.jpg camera EXIF": save("astronaut", "JPEG", exif=exif_bytes({0x010F: "Canon", 0x0110: "EOS R5"})),
        "coffee.jpg Photoshop EXIF + XMP": save("coffee", "JPEG", exif=exif_bytes({0x0131: "Adobe Photoshop 25.0"}),
                                                xmp=source_type_xmp("humanEdits").encode()),
        "chelsea.jpg XMP trainedAlgorithmicMedia": save("chelsea", "JPEG",
                                                        xmp=source_type_xmp("trainedAlgorithmicMedia").encode()),
        "rocket.png A1111 parameters": save("rocket", "PNG", pnginfo=a1111),
        "coffee.png ComfyUI prompt + workflow": save("coffee", "PNG", pnginfo=comfy),
        "astronaut.webp EXIF + XMP": save("astronaut", "WEBP", exif=exif_bytes({0x0131: "GIMP 2.10"}),
                                          xmp=source_type_xmp("digitalCapture").encode()),
    }


def time_reads(samples: list[bytes], repeats: int) -> dict[str, Any]:
    for data in samples[:3]:
        read_provenance(data)  # warm up: imports, the native library, regex compilation
    timings = []
    for _ in range(repeats):
        for data in samples:
            started = time.perf_counter()
            read_provenance(data)
            timings.append((time.perf_counter() - started) * 1000)
    return {"images": len(samples), "reads": len(timings),
            "p50_ms": round(statistics.median(timings), 3),
            "p95_ms": round(float(np.percentile(timings, 95)), 3),
            "max_ms": round(max(timings), 3),
            "mean_bytes": int(statistics.mean(len(d) for d in samples))}


def model_time(files: list[Path], threads: int) -> dict[str, Any]:
    """The shipped detector's time for one image alone (decode included), as benchmarks/detector.py does."""
    from core.model_metadata import SHIPPED_MODEL
    from models.cli import configure_tensorflow
    from models.preprocessing import decode_image_file
    from models.serving import Detector

    configure_tensorflow(threads)
    detector = Detector.load(SHIPPED_MODEL)
    detector.score([decode_image_file(files[0])])  # trace the graph once
    single = []
    for path in files[:40]:
        started = time.perf_counter()
        detector.score([decode_image_file(path)])
        single.append((time.perf_counter() - started) * 1000)
    return {"model_version": detector.version, "cpu_threads": threads, "images": len(single),
            "single_image_ms_p50": round(statistics.median(single), 1),
            "single_image_ms_p95": round(float(np.percentile(single, 95)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--files", type=int, default=400, help="test files without metadata to time")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args()

    plain_files = files_without_metadata(args.data, args.files)
    plain = [path.read_bytes() for path in plain_files]
    with_metadata = photos_with_metadata()
    manifests = {name: (FIXTURES / name).read_bytes() for name in ("C.jpg", "CA.jpg", "E-sig-CA.jpg", "XCA.jpg")}
    groups = {
        "no_metadata": time_reads(plain, args.repeats),
        "metadata_no_manifest": time_reads(list(with_metadata.values()), args.repeats * 20),
        "c2pa_manifest": time_reads(list(manifests.values()), args.repeats * 10),
    }
    per_file = {name: time_reads([data], args.repeats * 10)["p50_ms"]
                for name, data in {**with_metadata, **manifests}.items()}
    no_manifest = time_reads(plain + list(with_metadata.values()), args.repeats)
    result: dict[str, Any] = {
        # Timings on a shared machine move with its load: recorded beside them.
        "cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(), "c2pa_python": version("c2pa-python"),
        "defusedxml": version("defusedxml"), "pillow": version("pillow"),
        "groups": groups,
        "per_file_p50_ms": per_file,
        "target": {"p50_ms_without_manifest_under": TARGET_P50_MS, "p50_ms_without_manifest": no_manifest["p50_ms"],
                   "met": no_manifest["p50_ms"] < TARGET_P50_MS},
        "signals_found_in_test_splits": sum(len(read_provenance(d).signals) for d in plain),
    }
    if not args.skip_model:
        result["model"] = model_time(plain_files, args.threads)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
