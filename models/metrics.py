"""Detector metrics from scores and labels, shared by training (validation) and evaluation. Pure numpy and
scikit-learn: no TensorFlow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Mean |P(fake) - observed fake rate| over equal-width score bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for index in range(bins):
        mask = which == index
        if mask.any():
            error += mask.mean() * abs(scores[mask].mean() - labels[mask].mean())
    return float(error)


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, max_fpr: float = 0.05) -> float:
    """The best true-positive rate whose false-positive rate is at most ``max_fpr``."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= max_fpr].max())


def compute_metrics(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, threshold: float) -> dict[str, Any]:
    """Counts, accuracy, balanced accuracy, ROC AUC, TPR at 5% FPR, FPR at the threshold, confusion, ECE.

    A split with one class only (real-extra has no fakes) gets ``None`` for the metrics that need both."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    predicted = (s >= threshold).astype(np.int64)
    tp = int(((predicted == 1) & (y == 1)).sum())
    tn = int(((predicted == 0) & (y == 0)).sum())
    fp = int(((predicted == 1) & (y == 0)).sum())
    fn = int(((predicted == 0) & (y == 1)).sum())
    n_real, n_fake = int((y == 0).sum()), int((y == 1).sum())
    both = bool(n_real and n_fake)
    tpr = tp / n_fake if n_fake else None
    tnr = tn / n_real if n_real else None
    balanced = (tpr + tnr) / 2 if tpr is not None and tnr is not None else None
    return {
        "counts": {"real": n_real, "fake": n_fake, "total": len(y)},
        "threshold": float(threshold),
        "accuracy": (tp + tn) / len(y) if len(y) else None,
        "balanced_accuracy": balanced,
        "roc_auc": float(roc_auc_score(y, s)) if both else None,
        "tpr_at_5pct_fpr": tpr_at_fpr(s, y, 0.05) if both else None,
        "tpr_at_threshold": tpr,
        "fpr_at_threshold": fp / n_real if n_real else None,
        "confusion_matrix": {"labels": ["real", "fake"], "rows_true_cols_predicted": [[tn, fp], [fn, tp]]},
        "ece": expected_calibration_error(s, y) if len(y) else None,
        "mean_score": float(s.mean()) if len(y) else None,
    }


def flag_bound(
    real_scores: Sequence[float] | np.ndarray, max_flagged: float, weights: Sequence[float] | np.ndarray | None = None
) -> float:
    """The lowest score bound that leaves at most ``max_flagged`` of these real images (by ``weights``, all equal
    by default) at or above it."""
    order = np.argsort(np.asarray(real_scores, dtype=np.float64))
    real = np.asarray(real_scores, dtype=np.float64)[order]
    if not len(real):
        return 0.5
    w = np.ones(len(real)) if weights is None else np.asarray(weights, dtype=np.float64)[order]
    above = np.cumsum(w[::-1])[::-1] / w.sum()  # share of weight at or above each score
    # The first index whose tail holds no more than max_flagged; the bound sits just above the score before it.
    allowed = np.flatnonzero(above <= max_flagged + 1e-12)
    if not len(allowed):
        return float(real[-1] + 1e-6)
    first = int(allowed[0])
    return float(real[first - 1] + 1e-6) if first > 0 else float(real[0])


def operating_point(
    real_scores: Sequence[float] | np.ndarray,
    max_flagged: float = 0.04,
    max_fake_fpr: float = 0.015,
    min_band: float = 0.05,
    weights: Sequence[float] | np.ndarray | None = None,
) -> tuple[float, float]:
    """Threshold and band from validation reals: real below ``t - b`` (at most ``max_flagged`` of the reals
    reach it, so at most that share is flagged), fake from ``t + b`` (at most ``max_fake_fpr`` of the reals called
    fake), at least ``2 * min_band`` apart and with the fake bound at 0.5 or above, as the verdict policy reads it.

    A false "fake" on a genuine photo is the costliest mistake this tool makes, so both bounds come from the real
    images alone; how many fakes they catch is then measured, not traded against."""
    real_bound = min(flag_bound(real_scores, max_flagged, weights), 0.5)
    fake_bound = min(max(flag_bound(real_scores, max_fake_fpr, weights), real_bound + 2 * min_band, 0.5), 0.995)
    return (real_bound + fake_bound) / 2, (fake_bound - real_bound) / 2
