"""Does a retrain learn what moderators teach it, without forgetting? Printed as JSON.

For each new domain (a dataset of ``../shared/data`` the model before never trained on, by its metadata), label
100 of its real and 100 of its fake training images as reviews, retrain the way the console's "Retrain" does
(``worker/training.py``: the model before fine-tuned on its base datasets plus the reviews, reviewed images a fixed
share of the draws, 15% of them kept for calibration), then score the rest of the domain (never reviewed) and the
base datasets' validation splits with the model before and after:

- the share of the domain's genuine photos flagged (fake or uncertain), each model at its own threshold and band;
  target: at least halved;
- the domain's AUC; target: up;
- each base dataset's validation AUC; target: down by at most 0.01.

    python benchmarks/adaptation.py [--before var/models/stage5/default.keras] [--data ../shared/data]
                                    [--domains realorai_alkemist,diffusion_trio_vs_imagenet] [--epochs 5]
                                    [--out benchmarks/adaptation-results.json]

``make model`` leaves the faces-only stage-5 model at ``var/models/stage5/default.keras``: it never saw the
diffusion sets, so each of them can play the new collection. About 8 minutes per domain on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.model_metadata import read_metadata
from core.policy import decide_verdict
from models.cli import configure_tensorflow
from models.data import OTHER_GROUP, REVIEWED_SHARE, Item, list_items
from models.generalisation import base_datasets, describe_scores, score_items
from testbed.report import emit

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_BEFORE = Path(__file__).resolve().parents[1] / "var" / "models" / "stage5" / "default.keras"
DEFAULT_DOMAINS = "realorai_alkemist,diffusion_trio_vs_imagenet"
ROUNDS = 500  # bootstrap rounds for the intervals


def pick_reviews(domain: Path, per_class: int, seed: int) -> tuple[list[Item], list[Item]]:
    """``per_class`` reals and fakes of the domain's train split as reviews (seeded), and every other image of it."""
    rng = np.random.default_rng(seed)
    train = list_items(domain, "train")
    reviews: list[Item] = []
    for label in (0, 1):
        members = [item for item in train if item[1] == label]
        if len(members) < per_class:
            raise SystemExit(f"{domain.name} has only {len(members)} training images of class {label}")
        reviews += [members[i] for i in sorted(rng.choice(len(members), per_class, replace=False))]
    chosen = {path for path, _ in reviews}
    rest = [item for item in train if item[0] not in chosen]
    rest += list_items(domain, "valid") + list_items(domain, "test")
    return reviews, rest


def as_reviewed(items: list[Item], folder: Path) -> list[Item]:
    """Links to the reviewed images outside any dataset layout, as the image store keeps them, so the retrain
    groups them as reviewed images (``models.data.OTHER_GROUP``) exactly as it does in the product."""
    folder.mkdir(parents=True)
    linked = []
    for index, (path, label) in enumerate(items):
        link = folder / f"{index:04d}{path.suffix}"
        link.symlink_to(path.resolve())
        linked.append((link, label))
    return linked


def measure(model_path: Path, rest: list[Item], base: dict[str, list[Item]]) -> dict[str, Any]:
    """The domain's unreviewed images and each base validation split, scored at the model's own operating point."""
    from models.serving import Detector

    detector = Detector.load(model_path)

    def verdict(score: float) -> str:
        return decide_verdict(score, detector.threshold, detector.band)

    scores, labels = score_items(detector, rest)
    report: dict[str, Any] = {"threshold": round(detector.threshold, 4), "band": round(detector.band, 4),
                              "domain": describe_scores(scores, labels, verdict, ROUNDS), "base_valid": {}}
    for name, items in base.items():
        base_scores, base_labels = score_items(detector, items)
        report["base_valid"][name] = describe_scores(base_scores, base_labels, verdict, ROUNDS)
    return report


def adapt(domain: Path, before: Path, base_dirs: list[Path], args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    from models.train import TrainConfig, train

    reviews, rest = pick_reviews(domain, args.reviews, args.seed)
    base_valid = {path.name: list_items(path, "valid") for path in base_dirs}
    print(f"{domain.name}: {len(reviews)} reviews, {len(rest)} images scored", file=sys.stderr, flush=True)
    started = time.monotonic()
    after = train(TrainConfig([str(path) for path in base_dirs], epochs=args.epochs,
                              items=as_reviewed(reviews, scratch / "store"), init_from=before,
                              shares={OTHER_GROUP: args.share}, out=scratch / "after.keras", verbose=0, seed=args.seed))
    train_seconds = time.monotonic() - started
    result: dict[str, Any] = {"domain": domain.name, "reviews": {"real": args.reviews, "fake": args.reviews},
                              "train_seconds": round(train_seconds, 1), "before": measure(before, rest, base_valid),
                              "after": measure(after, rest, base_valid)}
    result["verdict"] = targets(result)
    print(json.dumps({"domain": domain.name, **result["verdict"]}), file=sys.stderr, flush=True)
    return result


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's three targets, with the figures they compare."""
    before, after = result["before"], result["after"]
    flagged = (before["domain"]["reals_flagged"], after["domain"]["reals_flagged"])
    auc = (before["domain"].get("auc"), after["domain"].get("auc"))
    drops = {name: round(before["base_valid"][name]["auc"] - after["base_valid"][name]["auc"], 4)
             for name in before["base_valid"] if "auc" in before["base_valid"][name]}
    return {
        "reals_flagged_before_after": flagged,
        "reals_flagged_at_least_halved": flagged[1] <= flagged[0] / 2,
        "auc_before_after": auc,
        "auc_up": auc[0] is not None and auc[1] is not None and auc[1] > auc[0],
        "base_valid_auc_drop": drops,
        "base_auc_drop_at_most_0.01": all(drop <= 0.01 for drop in drops.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, default=DEFAULT_BEFORE, help="The model before the reviews.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--domains", default=DEFAULT_DOMAINS, help="Comma-separated datasets to adapt to.")
    parser.add_argument("--reviews", type=int, default=100, help="Reviewed images per class.")
    parser.add_argument("--epochs", type=int, default=5, help="Retrain epochs (the console's default).")
    parser.add_argument("--share", type=float, default=REVIEWED_SHARE,
                        help="Share of the draws for reviewed images (the console's retrain: models.data.REVIEWED_SHARE).")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    args = parser.parse_args()
    configure_tensorflow(args.threads)
    seen = base_datasets(args.before)
    base_dirs = [args.data / name for name in sorted(seen) if (args.data / name).is_dir()]
    output: dict[str, Any] = {"before": str(args.before), "share": args.share, "before_version": read_metadata(args.before)["name"],
                              "base_datasets": [path.name for path in base_dirs], "epochs": args.epochs, "domains": []}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        for index, name in enumerate(args.domains.split(",")):
            if name in seen:
                raise SystemExit(f"{args.before} was trained on {name}: it cannot play a new collection")
            folder = Path(scratch) / str(index)
            output["domains"].append(adapt(args.data / name, args.before, base_dirs, args, folder))
    output["wall_seconds"] = round(time.monotonic() - started, 1)
    emit(output, args.out)


if __name__ == "__main__":
    main()
