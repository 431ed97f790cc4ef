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


def choose_threshold(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, max_fpr: float = 0.05
) -> float:
    """The decision threshold on validation scores: the best balanced accuracy, raised if needed until at most
    ``max_fpr`` of real images score at or above it (a false 'fake' is the costliest mistake here)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if not ((y == 0).any() and (y == 1).any()):
        return 0.5
    candidates = np.unique(np.concatenate([s, [0.5]]))
    real, fake = s[y == 0], s[y == 1]
    tpr = np.array([(fake >= t).mean() for t in candidates])
    fpr = np.array([(real >= t).mean() for t in candidates])
    best = candidates[int(np.argmax((tpr + 1 - fpr) / 2))]
    allowed = candidates[fpr <= max_fpr]
    floor = float(allowed.min()) if len(allowed) else float(s.max()) + 1e-6
    return float(min(max(best, floor), 0.99))
