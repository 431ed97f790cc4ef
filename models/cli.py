"""``fakewatch train|evaluate|score``: module-level click commands the lead attaches to the ``fakewatch`` group.

TensorFlow is imported only inside the command bodies so ``fakewatch --help`` stays fast. Logs go to stderr;
``score --jsonl`` writes nothing but JSON lines to stdout. Also runnable alone: ``python -m models.cli``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from backend.image_provenance import load_trust_anchors, read_image_provenance
from backend.provenance import Provenance
from backend.settings import Settings
from core.errors import FakewatchError
from core.model_metadata import SHIPPED_MODEL, read_metadata
from core.policy import Evidence, decide
from models.preprocessing import decode_image_file

log = logging.getLogger("fakewatch.models")
SCORE_BATCH = 32


def configure_tensorflow(threads: int | None) -> None:
    """Keep TensorFlow's C++ chatter off the terminal and, if asked, to a number of CPU threads (the machine is
    shared: scoring workers and tests run beside training)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


@click.command("train")
@click.option("--data", "data_dirs", multiple=True, required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset folder in the layout {train,valid,test}/{real,fake}/; repeat to combine several.")
@click.option("--arch", type=click.Choice(["default", "residual", "seed"]), default="default", show_default=True,
              help="default: the shipped detector (pixels and upsampling residuals of native crops); residual: "
                   "residuals only, no pixels (kept for the leave-one-out comparison); seed: the original CNN.")
@click.option("--epochs", type=int, default=None,
              help="Maximum epochs (early stopping on validation AUC; the seed on validation loss).")
@click.option("--out", type=click.Path(dir_okay=False), default="var/models/model.keras", show_default=True)
@click.option("--batch-size", type=int, default=None)
@click.option("--crops-per-image", type=int, default=1, show_default=True,
              help="Random training crops drawn from each image per epoch (crop architectures), unless "
                   "--steps-per-epoch is given.")
@click.option("--steps-per-epoch", type=click.IntRange(1), default=None,
              help="Batches per epoch, drawn balanced across datasets and classes.")
@click.option("--time-budget", "time_budget_s", type=click.FloatRange(1), default=None,
              help="Stop after about this many seconds of training (the best epoch so far is kept).")
@click.option("--crop-span", type=click.FloatRange(0.0, 1.0), default=None,
              help="Where crops are centred, as the central fraction of each side (1 = anywhere); used for the "
                   "training windows and written to the model for serving (default: the architecture's).")
@click.option("--init-from", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Fine-tune from this model file instead of starting from scratch.")
@click.option("--learning-rate", type=click.FloatRange(0, min_open=True), default=None,
              help="Peak learning rate (default: the architecture's, a third of it when fine-tuning).")
@click.option("--seed", type=int, default=1337, show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads TensorFlow may use.")
def train_command(data_dirs: tuple[str, ...], arch: str, epochs: int | None, out: str, batch_size: int | None,
                  crops_per_image: int, steps_per_epoch: int | None, time_budget_s: float | None,
                  crop_span: float | None, init_from: str | None, learning_rate: float | None, seed: int,
                  threads: int | None) -> None:
    """Train a detector; writes the .keras model, its metadata JSON and a curves PNG."""
    configure_tensorflow(threads)
    from models.train import train  # noqa: PLC0415 - TensorFlow, only for this command

    path = train([Path(d) for d in data_dirs], arch=arch, epochs=epochs, out=Path(out), batch_size=batch_size,
                 crops_per_image=crops_per_image, steps_per_epoch=steps_per_epoch, time_budget_s=time_budget_s,
                 crop_span=crop_span, init_from=init_from, learning_rate=learning_rate, seed=seed)
    meta = read_metadata(path)
    click.echo(json.dumps({"model": str(path), "name": meta["name"], "threshold": meta["threshold"],
                           "band": meta["band"], "valid": meta["metrics"]["valid"],
                           "train_seconds": meta["train_seconds"]}, indent=2))


@click.command("evaluate")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True)
@click.option("--roc", "roc_png", type=click.Path(dir_okay=False), default=None, help="Write the ROC curve here.")
@click.option("--robustness", is_flag=True, help="Resize to 3/4 and re-encode at JPEG 75 before scoring.")
@click.option("--threads", type=int, default=None, help="CPU threads TensorFlow may use.")
def evaluate_command(model: str, dataset_dir: str, split: str, roc_png: str | None, robustness: bool,
                     threads: int | None) -> None:
    """Print a model's metrics on a dataset split (or a bare {real,fake}/ folder) as JSON."""
    configure_tensorflow(threads)
    from models.evaluate import evaluate, jpeg75_three_quarters  # noqa: PLC0415 - TensorFlow

    report = evaluate(model, dataset_dir, split, transform=jpeg75_three_quarters if robustness else None,
                      roc_png=roc_png)
    click.echo(json.dumps(report, indent=2))


@click.command("score")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Model file (default: the shipped default model).")
@click.option("--jsonl", is_flag=True, help="One JSON object per line on stdout, nothing else.")
@click.option("--threads", type=int, default=None, help="CPU threads TensorFlow may use.")
def score_command(paths: tuple[str, ...], model: str | None, jsonl: bool, threads: int | None) -> None:
    """Score image files or folders locally, without a server. Exits 1 if any file could not be scored.

    The verdict follows the same policy as the server's: provenance in a file's metadata (Content Credentials, an
    IPTC digital source type, a generator's signature) can decide it; ``verdict_source`` says what did."""
    configure_tensorflow(threads)
    from models.serving import Detector  # noqa: PLC0415 - TensorFlow

    detector = Detector.load(model or SHIPPED_MODEL)
    settings = Settings()  # FAKEWATCH_TRUST_ANCHORS and the size cap, as the server reads provenance
    load_trust_anchors(settings)
    failed = 0
    for batch in _batches(_walk(paths), SCORE_BATCH):
        decoded, results = _decode_batch(batch)
        scores = iter(detector.score([image for _, image in decoded]))
        by_path = {path: next(scores) for path, _ in decoded}
        for path in batch:
            if path in by_path:
                score = by_path[path]
                # The fixed fields first; the policy's verdict with what decided it and the evidence beside them.
                provenance = read_image_provenance(path.read_bytes(), settings)
                evidence = Provenance.from_dict(provenance)
                decision = decide(Evidence(score=score, threshold=detector.threshold, band=detector.band,
                                           **evidence.policy_facts()))
                row: dict[str, Any] = {"path": str(path), "score": round(score, 6),
                                       "verdict": decision.verdict, "model_version": detector.version,
                                       "verdict_source": decision.source, "confidence": decision.confidence,
                                       "provenance": {**provenance, "summary": evidence.summary()}}
            else:
                failed += 1
                row = {"path": str(path), "error": results[path], "score": None}
            _emit(row, jsonl)
    sys.stdout.flush()
    if failed:
        log.warning("%d file(s) could not be scored", failed)
        sys.exit(1)


def _walk(paths: tuple[str, ...]) -> Iterator[Path]:
    """Files as given, and every file under given folders in a stable order."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def _batches(paths: Iterator[Path], size: int) -> Iterator[list[Path]]:
    batch: list[Path] = []
    for path in paths:
        batch.append(path)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _decode_batch(batch: list[Path]) -> tuple[list[tuple[Path, Any]], dict[Path, str]]:
    """Decoded images of a batch, and an error message for each file that failed."""
    decoded, errors = [], {}
    for path in batch:
        try:
            decoded.append((path, decode_image_file(path)))
        except FakewatchError as error:
            errors[path] = f"{error.code}: {error.message}"
        except Exception as error:  # noqa: BLE001 - an unreadable file gets its error line; the rest still run
            errors[path] = f"invalid_image: {type(error).__name__}: {error}"
            log.info("could not decode %s: %s", path, error)
    return decoded, errors


def _emit(row: dict[str, Any], jsonl: bool) -> None:
    if jsonl:
        click.echo(json.dumps(row))
    elif row["score"] is None:
        click.echo(f"{row['path']}\terror\t{row['error']}")
    else:
        # path, verdict, score, what decided it, and the provenance evidence (empty when there is none).
        click.echo(f"{row['path']}\t{row['verdict']}\t{row['score']:.4f}\t{row['verdict_source']}\t"
                   f"{row['provenance']['summary']}")


# What the lead's ``fakewatch`` group attaches.
COMMANDS = [train_command, evaluate_command, score_command]


@click.group()
def main() -> None:
    """Detector commands (also available as ``fakewatch train|evaluate|score``)."""


for _command in COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":
    main()
