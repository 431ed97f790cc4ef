"""Leave-one-out generalisation of the detector recipe (``models/generalisation.py``), printed as JSON.

For every fold (each dataset left out whole, and each generator of diffusion_trio_vs_imagenet left out with every
other set it made), train the shipped recipe from scratch on the rest under a fixed budget, then score every split
of what was left out: AUC and TPR at 5% FPR with 95% bootstrap intervals, the share of reals flagged (fake or
uncertain) and of fakes caught, at the fold model's own threshold and band. With ``--seed-cnn`` the seed CNN is
trained on the same fold data beside it.

    python benchmarks/generalisation.py [--data ../shared/data] [--folds NAME,NAME] [--budget-s 420]
                                        [--seed-cnn] [--out benchmarks/generalisation-results.json]

With ``--candidates`` it compares the aligned-pairs recipe (``models/pairwise.py``) across backbones instead, on
the same fold data plus the cached pairs (``python -m models.pairs``; pairs made from a left-out dataset's photos
are left out too). Each finished fold is cached as JSON under ``--cache`` and skipped on the next run, so an
interrupted run resumes:

    python benchmarks/generalisation.py --candidates npr-pairs,effnet-pairs --budget-s 240 \
        --folds realorai_alkemist,diffusion_trio_vs_imagenet --out benchmarks/generalisation-pairs.json

Candidates: ``npr-pairs`` (today's NPR CNN), ``effnet-pairs`` (EfficientNet-Lite0, fine-tuned), and for the
ingredient comparison ``effnet-shared`` (shared sets alone) and ``effnet-pairsonly`` (aligned pairs alone).

The whole run takes about 1.5 hours on 2 CPU cores (11 folds of at most 7 minutes of training each, plus
decoding and scoring); run it in the background. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.cli import configure_tensorflow
from models.generalisation import Fold, FoldData, left_out_datasets, run_fold, standard_folds
from models.pairs import load_pairs
from models.train import TrainConfig
from testbed.report import emit

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# The shipped recipe under a fixed budget: as many 150-step epochs as fit in the budget (early stopping keeps
# the best one on the fold's own validation splits).
RECIPE: dict[str, Any] = {"epochs": 30, "steps_per_epoch": 150, "patience": 6}
# The seed CNN as described (10 epochs, whole image at 150 px); it trains in about a minute per fold.
SEED_RECIPE: dict[str, Any] = {"arch": "seed", "epochs": 10, "temper": None, "patience": 10}


# name -> (architecture, share of each batch drawn as aligned pairs, use the shared sets' labelled images)
CANDIDATES: dict[str, tuple[str, float, bool]] = {
    "npr-pairs": ("default", 0.5, True),
    "effnet-pairs": ("efficientnet_lite0", 0.5, True),
    "effnet-shared": ("efficientnet_lite0", 0.0, True),
    "effnet-pairsonly": ("efficientnet_lite0", 1.0, False),
}
DEFAULT_PAIRS = Path("var/pairs/taef2")


def pairwise_trainer(candidate: str, fold: Fold, pairs_dirs: list[Path], budget_s: float,
                     cache: dict[Path, Any], steps: int | None = None) -> Any:
    """The fold's training function for a pairwise candidate (see ``models.generalisation.run_fold``)."""
    from models.pairwise import PairwiseConfig, train_pairwise

    arch, share, use_items = CANDIDATES[candidate]

    def trainer(data: FoldData, out: Path) -> Path:
        excluded = left_out_datasets(fold, data)
        pairs = [pair for folder in pairs_dirs for pair in load_pairs(folder, exclude=sorted(excluded))
                 if share > 0]
        config = PairwiseConfig(arch=arch, pairs=pairs, items=data.train if use_items else (),
                                valid_items=data.valid, out=out, steps=steps or 100_000, eval_every=40,
                                pair_share=share, time_budget_s=None if steps else budget_s, image_cache=cache)
        return train_pairwise(config)

    return trainer


def pair_folders(value: str) -> list[Path]:
    """``--pairs``: comma-separated folders, each holding a ``pairs.csv`` written by ``models.pairs``."""
    folders = [Path(part) for part in value.split(",") if part]
    missing = [str(folder) for folder in folders if not (folder / "pairs.csv").exists()]
    if missing:
        raise argparse.ArgumentTypeError(f"no pairs.csv in {', '.join(missing)} (make them with python -m models.pairs)")
    return folders


def speed_and_size(model_path: Path, images: list[Path], repeats: int = 1) -> dict[str, Any]:
    """Median milliseconds per image, file to score (decode, crops, model), one image at a time; file size."""
    from models.preprocessing import decode_image_file
    from models.serving import Detector

    detector = Detector.load(model_path)
    detector.warm()
    times = []
    for path in images * repeats:
        started = time.perf_counter()
        detector.score_with_regions([decode_image_file(path)])
        times.append((time.perf_counter() - started) * 1000)
    return {"ms_per_image_median": round(float(sorted(times)[len(times) // 2]), 1),
            "model_bytes": model_path.stat().st_size}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def run_candidates(args: argparse.Namespace, folds: list[Fold]) -> dict[str, Any]:
    """Every candidate on every fold, each finished fold cached under ``args.cache``."""
    from models.data import list_items

    cache: dict[Path, Any] = {}
    result: dict[str, Any] = {"data": str(args.data), "budget_s": None if args.steps else args.budget_s,
                              "steps": args.steps, "pairs": [str(p) for p in args.pairs],
                              "cpu_threads": args.threads, "candidates": {}}
    probe = [path for path, _ in list_items(args.data / "realorai_alkemist", "test")[:10]]
    names = args.candidates.split(",")
    reports: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    # Folds outside, candidates inside: a run stopped early has every candidate on the same folds.
    for fold in folds:
        for candidate in names:
            done = args.cache / candidate / f"{slug(fold.name)}.json"
            if done.exists():
                reports[candidate].append(json.loads(done.read_text()))
                continue
            print(f"{candidate}: {fold.name}", file=sys.stderr, flush=True)
            work = args.cache / candidate / slug(fold.name)
            trainer = pairwise_trainer(candidate, fold, args.pairs, args.budget_s, cache, args.steps)
            report = run_fold(fold, args.data, work, TrainConfig(), trainer=trainer)
            report["speed"] = speed_and_size(work / "model.keras", probe)
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(report, indent=2) + "\n")
            print(json.dumps(summary(report)), file=sys.stderr, flush=True)
            reports[candidate].append(report)
    for candidate in names:
        result["candidates"][candidate] = {"summary": [summary(r) for r in reports[candidate]],
                                           "folds": reports[candidate]}
    return result


def summary(fold: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a fold, for the table at the top of the output."""
    pooled = fold["all_splits"]
    row = {"fold": fold["fold"], "init": fold.get("init"), "auc": pooled.get("auc"), "auc_ci95": pooled.get("auc_ci95"),
           "tpr_at_5pct_fpr": pooled.get("tpr_at_5pct_fpr"), "reals_flagged": pooled.get("reals_flagged"),
           "fakes_caught": pooled.get("fakes_called_fake"), "fakes_flagged": pooled.get("fakes_flagged")}
    for name, dropped in fold["also_left_out"].items():
        row[f"{name}: auc"] = dropped.get("auc")
        row[f"{name}: fakes_caught"] = dropped.get("fakes_called_fake")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", default="", help="Comma-separated fold names (default: all).")
    parser.add_argument("--budget-s", type=float, default=420.0, help="Training seconds per fold, at most.")
    parser.add_argument("--base", type=Path, default=None,
                        help="Fine-tune each fold from this model when it never trained on what the fold leaves out "
                             "(by its metadata): the shipped recipe's last stage. Other folds train from scratch.")
    parser.add_argument("--seed-cnn", action="store_true", help="Also train and score the seed CNN per fold.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    parser.add_argument("--candidates", default="",
                        help=f"Compare the aligned-pairs recipe across these candidates ({', '.join(CANDIDATES)}).")
    parser.add_argument("--pairs", type=pair_folders, default=[DEFAULT_PAIRS],
                        help="Cached aligned pairs (models.pairs): one folder, or several separated by commas "
                             "(e.g. var/pairs/taef2 and every zoo member's folder); a fold draws from all of them.")
    parser.add_argument("--steps", type=int, default=None,
                        help="With --candidates: train each fold this many steps instead of --budget-s seconds. A step "
                             "budget compares recipes across runs on a shared machine, where a time budget buys fewer "
                             "steps under load (300 s gave one recipe about 320 steps one night and 219 the next: AUC 0.62 "
                             "and 0.49).")
    parser.add_argument("--cache", type=Path, default=Path("var/generalisation"),
                        help="Finished folds of --candidates runs, reused on the next run.")
    args = parser.parse_args()
    configure_tensorflow(args.threads)
    folds = standard_folds(args.data)
    if args.folds:
        wanted = [name.strip() for name in args.folds.split(",")]
        folds = sorted((fold for fold in folds if fold.name in wanted), key=lambda fold: wanted.index(fold.name))
    if args.candidates:
        output = run_candidates(args, folds)
        emit(output, args.out)
        return
    cache: dict[Path, Any] = {}
    result: dict[str, Any] = {"data": str(args.data), "budget_s": args.budget_s, "recipe": RECIPE,
                              "base": str(args.base) if args.base else None,
                              "cpu_threads": args.threads, "folds": [], "seed_cnn": []}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        for index, fold in enumerate(folds, 1):
            print(f"[{index}/{len(folds)}] {fold.name}", file=sys.stderr, flush=True)
            config = TrainConfig(**RECIPE, time_budget_s=args.budget_s, image_cache=cache)
            report = run_fold(fold, args.data, Path(scratch) / f"fold{index}", config, base=args.base)
            result["folds"].append(report)
            print(json.dumps(summary(report)), file=sys.stderr, flush=True)
            if args.out:  # after every fold, so a long run that is stopped still leaves what it measured
                args.out.write_text(json.dumps({**result, "partial": True}, indent=2) + "\n")
            if args.seed_cnn:
                seed_config = TrainConfig(**SEED_RECIPE, time_budget_s=args.budget_s, image_cache=cache)
                seed_report = run_fold(fold, args.data, Path(scratch) / f"seed{index}", seed_config)
                result["seed_cnn"].append(seed_report)
                print("seed: " + json.dumps(summary(seed_report)), file=sys.stderr, flush=True)
    result["summary"] = [summary(fold) for fold in result["folds"]]
    result["seed_cnn_summary"] = [summary(fold) for fold in result["seed_cnn"]]
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    emit(result, args.out)


if __name__ == "__main__":
    main()
