"""``fakewatch score``: score image files or folders locally, without a server, with the server's verdict policy
(provenance in a file's metadata can decide). ``--jsonl`` writes nothing but JSON lines to stdout; logs go to stderr.

It lives here, not in models/, because it reads provenance (backend/) beside the model (models/): only the
``fakewatch`` package may import both.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np

from backend.provenance import Provenance
from backend.provenance.intake import load_trust_anchors, read_image_provenance
from backend.settings import Settings
from core.errors import FakewatchError
from core.model_metadata import SHIPPED_MODEL
from core.policy import Evidence, decide, verdict_wording
from core.scope import out_of_scope_reason
from fakewatch.file_walk import walk_files
from models.preprocessing import decode_image_file
from models.serving import Detector

log = logging.getLogger("fakewatch.models")
SCORE_BATCH = 32


@click.command("score")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Model file (default: the shipped default model).")
@click.option("--jsonl", is_flag=True, help="One JSON object per line on stdout, nothing else.")
@click.option("--threads", type=int, default=None,
              help="CPU threads the runtime may use (default: FAKEWATCH_SCORING_THREADS, else 1).")
def score_command(paths: tuple[str, ...], model: str | None, jsonl: bool, threads: int | None) -> None:
    """Score image files or folders locally, without a server. Exits 1 if any file could not be scored.

    The verdict follows the same policy as the server's: provenance in a file's metadata (Content Credentials, an
    IPTC digital source type, a generator's signature) can decide it; ``verdict_source`` says what did."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # An exported model scores with LiteRT, without TensorFlow (a fraction of a second to load, not 10-20 s).
    detector = Detector.load(model or SHIPPED_MODEL, threads=threads)
    settings = Settings()  # FAKEWATCH_TRUST_ANCHORS and the size cap, as the server reads provenance
    load_trust_anchors(settings)
    failed = 0
    for batch in _batches(walk_files(paths), SCORE_BATCH):
        decoded, results = _decode_batch(batch)
        scores = iter(detector.score([image for _, image in decoded]))
        by_path = {path: next(scores) for path, _ in decoded}
        scope = {path: out_of_scope_reason(np.asarray(image)) for path, image in decoded}
        for path in batch:
            if path in by_path:
                score = by_path[path]
                # The fixed fields first; the policy's verdict with what decided it and the evidence beside them.
                provenance = read_image_provenance(path.read_bytes(), settings)
                evidence = Provenance.from_dict(provenance)
                decision = decide(Evidence(score=score, threshold=detector.threshold, band=detector.band,
                                           out_of_scope=scope[path], **evidence.policy_facts()))
                row: dict[str, Any] = {"path": str(path), "score": round(score, 6),
                                       "verdict": decision.verdict, "model_version": detector.version,
                                       "verdict_source": decision.source, "confidence": decision.confidence,
                                       "reason": decision.reason, "verdict_text": verdict_wording(decision),
                                       "provenance": {**provenance, "summary": evidence.summary()}}
            else:
                failed += 1
                row = {"path": str(path), "error": results[path], "score": None}
            _emit(row, jsonl)
    sys.stdout.flush()
    if failed:
        log.warning("%d file(s) could not be scored", failed)
        sys.exit(1)


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


COMMANDS = [score_command]
