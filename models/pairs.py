"""Aligned pairs: a genuine photo (sometimes processed the way moderators' photos are: blurred, resized, denoised,
sharpened, recompressed) and its reconstruction by a generator's decoder. Inside a pair only the decoder's trace
differs, so a detector trained on pairs cannot separate them by collection, content or format.

Pairs are cached as JPEG q95 files (both members alike, as the shared sets are stored) under ``var/pairs/<maker>/``
with a ``pairs.csv`` index; building resumes where it stopped.

    python -m models.pairs --maker taef2 --per-dataset 50 [--data ../shared/data] [--out var/pairs]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from models.data import list_items

# The side of the native-resolution window reconstructed from each photo (smaller photos are used whole).
WINDOW = 256
# Processing of genuine photos, each a real in its own right (the reconstruction is made from the processed photo).
PROCESSING = ("none", "half", "blur1", "denoise", "sharpen", "jpeg60")
INDEX_FIELDS = ("dataset", "source", "processing", "real", "fake")
Maker = Callable[[np.ndarray], np.ndarray]


def process(image: Image.Image, kind: str) -> Image.Image:
    """A genuine photo after ordinary processing (``PROCESSING``); the size is kept."""
    if kind == "half":
        small = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.BILINEAR)
        return small.resize(image.size, Image.Resampling.BILINEAR)
    if kind == "blur1":
        return image.filter(ImageFilter.GaussianBlur(1.0))
    if kind == "denoise":
        return image.filter(ImageFilter.MedianFilter(3))
    if kind == "sharpen":
        return image.filter(ImageFilter.UnsharpMask(radius=2, percent=120, threshold=2))
    if kind == "jpeg60":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=60)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind != "none":
        raise ValueError(f"unknown processing {kind!r}")
    return image


def window(image: Image.Image, rng: np.random.Generator, side: int = WINDOW) -> Image.Image:
    """A random native-resolution window, at most ``side`` square, with sides that are multiples of 8."""
    width, height = min(side, image.width) // 8 * 8, min(side, image.height) // 8 * 8
    left = int(rng.integers(0, image.width - width + 1))
    top = int(rng.integers(0, image.height - height + 1))
    return image.crop((left, top, left + width, top + height))


def choose_sources(data_root: Path, datasets: Sequence[str], per_dataset: int, seed: int) -> list[tuple[str, Path]]:
    """Up to ``per_dataset`` train-split reals of each dataset, drawn with ``seed``, interleaved across datasets
    (so a run stopped early still covers every dataset)."""
    rng = np.random.default_rng(seed)
    chosen: list[list[tuple[str, Path]]] = []
    for name in datasets:
        reals = [path for path, label in list_items(data_root / name, "train") if label == 0]
        picks = rng.permutation(len(reals))[:per_dataset]
        chosen.append([(name, reals[i]) for i in sorted(picks)])
    return [group[i] for i in range(per_dataset) for group in chosen if i < len(group)]


def read_index(index: Path) -> list[dict[str, str]]:
    if not index.exists():
        return []
    with index.open(newline="") as handle:
        return list(csv.DictReader(handle))


def save_jpeg(image: Image.Image | np.ndarray, path: Path) -> None:
    picture = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    picture.save(path, "JPEG", quality=95)


def build(maker: Maker, sources: Sequence[tuple[str, Path]], out: Path, seed: int, processed_p: float = 0.5,
          log: Callable[[str], None] = print) -> Path:
    """Write each source's (processed) window and its reconstruction; skips sources already in the index."""
    out.mkdir(parents=True, exist_ok=True)
    index = out / "pairs.csv"
    done = {row["source"] for row in read_index(index)}
    new = not index.exists()
    started = time.monotonic()
    with index.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=INDEX_FIELDS)
        if new:
            writer.writeheader()
        for count, (dataset, source) in enumerate(sources, 1):
            if str(source) in done:
                continue
            key = hashlib.sha1(str(source).encode()).hexdigest()[:16]
            rng = np.random.default_rng([seed, int(key, 16) % 2**32])
            kind = "none" if rng.random() >= processed_p else str(rng.choice(PROCESSING[1:]))
            real = process(window(Image.open(source).convert("RGB"), rng), kind)
            fake = maker(np.asarray(real))
            real = real.crop((0, 0, fake.shape[1], fake.shape[0]))
            save_jpeg(real, out / f"{key}_real.jpg")
            save_jpeg(fake, out / f"{key}_fake.jpg")
            writer.writerow({"dataset": dataset, "source": str(source), "processing": kind,
                             "real": f"{key}_real.jpg", "fake": f"{key}_fake.jpg"})
            handle.flush()
            log(f"[{count}/{len(sources)}] {dataset} {kind} ({time.monotonic() - started:.0f} s)")
    return index


def load_pairs(folder: Path, exclude: Sequence[str] = ()) -> list[tuple[str, Path, Path]]:
    """(dataset, real path, fake path) of every cached pair whose source dataset is not excluded."""
    return [(row["dataset"], folder / row["real"], folder / row["fake"]) for row in read_index(folder / "pairs.csv")
            if row["dataset"] not in exclude]


DEFAULT_DATASETS = ("faces-stylegan2", "faces-faceswap", "faces-photoshop", "real-extra", "realorai_alkemist",
                    "diffusion_trio_vs_imagenet", "sd15_cats_vs_oxford_pets", "cameras_polyu_realonly")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maker", default="taef2", help="taef2 (the FLUX.2 tiny autoencoder) or a zoo member name.")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--datasets", default=",".join(DEFAULT_DATASETS))
    parser.add_argument("--per-dataset", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("var/pairs"))
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    from models.cli import configure_tensorflow

    configure_tensorflow(args.threads)
    maker = make_maker(args.maker)
    sources = choose_sources(args.data, args.datasets.split(","), args.per_dataset, args.seed)
    build(maker, sources, args.out / args.maker, args.seed, log=lambda line: print(line, file=sys.stderr, flush=True))


def make_maker(name: str) -> Maker:
    """The reconstruction function of ``taef2`` or of a trained zoo member (``var/zoo/<name>.keras``)."""
    if name == "taef2":
        from models.generators.taesd import Reconstructor

        return Reconstructor()
    from models.generators.zoo import load_member

    return load_member(name)


if __name__ == "__main__":
    main()
