"""Benchmark the serving runtimes against TensorFlow on one model and print JSON: load time (a fresh process's
import + load + first crop), crops a second and ms per image (36 crops) at 1 and 2 threads, peak resident memory,
and the test-split AUC of float32, float16 and int8 exports against Keras' (the bound: within 0.005 on every split).
ONNX Runtime is measured too when ``onnxruntime`` and ``tf2onnx`` are installed (they are not dependencies).

    python benchmarks/runtime.py [--model models/shipped/default.keras] [--data ../shared/data]
                                 [--per-split 150] [--out benchmarks/runtime-results.json]

Each runtime's speed is measured in a process of its own, one after the other, on the same random crops.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.model_metadata import SHIPPED_MODEL, read_metadata
from models.data import list_items, load_items
from models.metrics import compute_metrics
from models.preprocessing import input_size
from models.serving import Detector
from testbed.report import emit

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# The shipped model's eight training sets: their test splits are the ones the AUC bound is checked on.
TEST_SETS = ("diffusion_trio_vs_imagenet", "faces-faceswap", "faces-photoshop", "faces-stylegan2", "real-extra",
             "realorai_alkemist", "sd15_cats_vs_oxford_pets", "sd_classimages_fakeonly")
AUC_BOUND = 0.005

SPEED = textwrap.dedent("""
    import json, sys, time
    started = time.perf_counter()
    kind, path, threads, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    import numpy as np
    if kind == "tensorflow":
        import os; os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf, keras
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        from models.runtime import KerasModel
        runtime = KerasModel(keras.saving.load_model(path, compile=False), size)
    elif kind == "onnxruntime":
        import onnxruntime as ort
        options = ort.SessionOptions(); options.intra_op_num_threads = threads; options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        class Onnx:
            def predict(self, rows): return session.run(None, {name: rows})[0]
        runtime = Onnx()
    else:
        from pathlib import Path
        from models.runtime import LiteRTModel
        runtime = LiteRTModel(Path(path).read_bytes(), threads)
    crops = np.random.default_rng(0).integers(0, 256, (144, size, size, 3)).astype(np.float32)
    runtime.predict(crops[:1])
    load_s = time.perf_counter() - started
    result = {"load_s": round(load_s, 3)}
    for rows in (36, 144):
        batch = crops[:rows]
        runtime.predict(batch)
        calls, began = 0, time.perf_counter()
        while time.perf_counter() - began < 4:
            runtime.predict(batch); calls += 1
        per_call = (time.perf_counter() - began) / calls
        result[f"crops_per_s_batch{rows}"] = round(rows / per_call, 1)
    result["ms_per_image_36_crops"] = round(36000 / result["crops_per_s_batch36"], 2)
    # VmHWM, not ru_maxrss: the latter keeps the parent's high-water mark across fork and exec.
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    result["peak_rss_mb"] = round(int(hwm.split()[1]) / 1024, 1)
    print(json.dumps(result))
""")


ONNX_EXPORT = textwrap.dedent("""
    import sys
    import numpy as np, keras, onnxruntime, tf2onnx
    model = keras.saving.load_model(sys.argv[1], compile=False)
    model(np.zeros((1,) + tuple(model.inputs[0].shape[1:]), np.float32))  # the exporter needs a called model
    model.export(sys.argv[2], format="onnx", verbose=False)
""")


def measure_speed(kind: str, path: Path, threads: int, size: int) -> dict[str, Any]:
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", SPEED, kind, str(path), str(threads), str(size)], capture_output=True,
                          text=True, env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"}, timeout=600, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else str(done.returncode)}
    parsed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


def export_variants(model_path: Path, scratch: Path) -> dict[str, Path]:
    """The shipped float32 export and float16 / int8 (dynamic range) exports of the same model, plus ONNX if its
    exporter is installed."""
    import keras

    from models.export import convert

    model = keras.saving.load_model(model_path, compile=False)
    variants = {"litert-float32": model_path.with_suffix(".tflite")}
    for quantization in ("float16", "int8"):
        variants[f"litert-{quantization}"] = convert(model, scratch / f"{quantization}.tflite", quantization)
    onnx = scratch / "model.onnx"
    try:  # in a process of its own: tf2onnx after the LiteRT converter in one process has hung here
        subprocess.run([sys.executable, "-c", ONNX_EXPORT, str(model_path), str(onnx)], timeout=600, check=True,
                       capture_output=True, env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                                                 "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
        variants["onnxruntime-float32"] = onnx
    except (subprocess.SubprocessError, OSError) as error:
        print(f"no ONNX export: {error}", file=sys.stderr)
    return variants


def split_aucs(model_path: Path, variants: dict[str, Path], data: Path, per_split: int) -> dict[str, Any]:
    """Test-split AUC for Keras and each LiteRT variant, on the same images (at most ``per_split`` per set,
    evenly spread over the split's sorted list so both classes stay)."""
    import keras

    metadata = read_metadata(model_path)
    detectors = {"tensorflow": Detector.from_keras(keras.saving.load_model(model_path, compile=False), metadata)}
    from models.runtime import LiteRTModel

    for name, path in variants.items():
        if name.startswith("litert"):
            detectors[name] = Detector(LiteRTModel(path.read_bytes(), threads=2), metadata)
    table: dict[str, Any] = {}
    for dataset in TEST_SETS:
        items = list_items(data / dataset, "test")
        if len(items) > per_split:
            items = [items[round(i * (len(items) - 1) / (per_split - 1))] for i in range(per_split)]
        loaded = load_items(items)
        if len(set(loaded.labels)) < 2:
            table[dataset] = {"images": len(loaded.images), "note": "one class only: no AUC"}
            continue
        row: dict[str, Any] = {"images": len(loaded.images)}
        for name, detector in detectors.items():
            row[name] = round(float(compute_metrics(detector.score(loaded.images), loaded.labels, 0.5)["roc_auc"]), 4)
        table[dataset] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--per-split", type=int, default=150, help="Images per test split at most (AUC).")
    parser.add_argument("--skip-auc", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    size = input_size(read_metadata(args.model)["preprocessing"])
    result: dict[str, Any] = {"model": read_metadata(args.model)["name"], "speed": {}}
    with tempfile.TemporaryDirectory() as scratch:
        variants = export_variants(args.model, Path(scratch))
        result["file_kb"] = {name: round(path.stat().st_size / 1024) for name, path in variants.items()}
        result["file_kb"]["keras"] = round(args.model.stat().st_size / 1024)
        runs = [("tensorflow", args.model), *[(name.split("-")[0], path) for name, path in variants.items()]]
        names = ["tensorflow", *variants]
        for name, (kind, path) in zip(names, runs, strict=True):
            for threads in (1, 2):
                result["speed"][f"{name} threads={threads}"] = measure_speed(kind, path, threads, size)
                print(name, threads, result["speed"][f"{name} threads={threads}"], file=sys.stderr)
        if not args.skip_auc:
            aucs = split_aucs(args.model, variants, args.data, args.per_split)
            result["test_auc"] = aucs
            worst = {name: max((abs(row[name] - row["tensorflow"]) for row in aucs.values() if name in row),
                               default=0.0) for name in variants if name.startswith("litert")}
            result["largest_auc_change_vs_tensorflow"] = {name: round(value, 4) for name, value in worst.items()}
            result["within_bound"] = {name: value <= AUC_BOUND for name, value in worst.items()}
    emit(result, args.out)


if __name__ == "__main__":
    main()
