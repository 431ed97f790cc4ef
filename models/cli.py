"""``fakewatch train|evaluate``: module-level click commands the lead attaches to the ``fakewatch`` group.

TensorFlow is imported only inside the command bodies so ``fakewatch --help`` stays fast. Logs go to stderr;
Also runnable alone: ``python -m models.cli``. (``fakewatch score`` is in fakewatch/score_command.py: it reads
provenance, which lives in backend/, and models/ imports only core/.)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import click

from core.model_metadata import read_metadata

log = logging.getLogger("fakewatch.models")


def configure_tensorflow(threads: int | None) -> None:
    """Import TensorFlow without its C++ start-up chatter (unless `fakewatch --verbose`) and, if asked, limit it
    to a number of CPU threads (the machine is shared: scoring workers and tests run beside training)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import_tensorflow(verbose=_verbose())
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def _verbose() -> bool:
    """Whether the command line asked for --verbose (the `fakewatch` group's flag; False outside a command)."""
    context = click.get_current_context(silent=True)
    return bool(context is not None and context.find_root().params.get("verbose"))


def import_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow once. Its start-up lines (absl's "All log messages before absl::InitializeLog()", oneDNN's
    note on round-off, the CPU feature guard) are written by C++ straight to file descriptor 2, whatever
    TF_CPP_MIN_LOG_LEVEL says (TensorFlow 2.20), so they are caught there and shown only when verbose, or when the
    import fails (then they may say why)."""
    if "tensorflow" in sys.modules:
        return
    if verbose:
        import tensorflow
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


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
    from models.train import TrainConfig, train  # TensorFlow, only for this command

    path = train(TrainConfig(
        [Path(d) for d in data_dirs], arch=arch, epochs=epochs, out=Path(out), batch_size=batch_size,
        crops_per_image=crops_per_image, steps_per_epoch=steps_per_epoch, time_budget_s=time_budget_s,
        crop_span=crop_span, init_from=init_from, learning_rate=learning_rate, seed=seed))
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
    from models.evaluate import evaluate, jpeg75_three_quarters  # TensorFlow

    report = evaluate(model, dataset_dir, split, transform=jpeg75_three_quarters if robustness else None,
                      roc_png=roc_png)
    click.echo(json.dumps(report, indent=2))


@click.command("export-model")
@click.argument("model", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option("--quantization", type=click.Choice(["float32", "float16", "int8"]), default="float32",
              show_default=True, help="Weights of the exported file (float32 keeps Keras' scores to about 1e-6).")
def export_command(model: str | None, quantization: str) -> None:
    """Export a .keras model (default: the shipped one) to LiteRT beside it, check it scores as Keras does, and
    record the file with its SHA-256 in the model's metadata. Workers then score it without TensorFlow."""
    from core.model_metadata import SHIPPED_MODEL
    from models.export import export_model

    path = export_model(model or SHIPPED_MODEL, quantization)
    click.echo(f"Wrote {path} and listed it in {Path(path).with_suffix('.json').name}.")


# What the lead's ``fakewatch`` group attaches.
COMMANDS = [train_command, evaluate_command, export_command]


@click.group()
def main() -> None:
    """Detector commands (also available as ``fakewatch train|evaluate``)."""


for _command in COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":
    main()
