"""The table the console and ``fakewatch retrain --wait`` show from the candidate-vs-active comparison a finished
run carries (core.retraining.Comparison, measured by worker/candidate.py), each figure with its 95% confidence
interval (how far a measurement on so few images can be from the truth)."""

from __future__ import annotations

import math
from typing import Any

from core.retraining import Comparison, Metrics

COMPARED_METRICS = ("roc_auc", "accuracy", "fpr_at_threshold")
Z_95 = 1.959964


def wilson_interval(successes: int, trials: int) -> tuple[float, float] | None:
    """The 95% Wilson score interval of a proportion (sound at small counts, unlike the normal approximation)."""
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + Z_95**2 / trials
    centre = (p + Z_95**2 / (2 * trials)) / denominator
    half = Z_95 * math.sqrt(p * (1 - p) / trials + Z_95**2 / (4 * trials**2)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def auc_interval(auc: float, n_fake: int, n_real: int) -> tuple[float, float] | None:
    """A 95% interval for ROC AUC from Hanley and McNeil's (1982) standard error."""
    if n_fake <= 0 or n_real <= 0:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (n_fake - 1) * (q1 - auc**2) + (n_real - 1) * (q2 - auc**2)) / (n_fake * n_real)
    half = Z_95 * math.sqrt(max(variance, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def metric_interval(metric: str, metrics: Metrics) -> tuple[float, float] | None:
    """The 95% interval of one compared metric, from the counts stored beside it; None when it was not measured."""
    value = metrics.get(metric)
    counts = metrics.get("counts") or {}
    n_real, n_fake = int(counts.get("real", 0)), int(counts.get("fake", 0))
    if value is None:
        return None
    if metric == "roc_auc":
        return auc_interval(float(value), n_fake, n_real)
    if metric == "accuracy":
        return wilson_interval(round(float(value) * (n_real + n_fake)), n_real + n_fake)
    if metric == "fpr_at_threshold":
        return wilson_interval(round(float(value) * n_real), n_real)
    return None


def format_interval(interval: tuple[float, float] | None) -> str | None:
    return f"{interval[0]:.3f} to {interval[1]:.3f}" if interval else None


def comparison_rows(comparison: Comparison | None, min_images: int = 0) -> list[dict[str, Any]]:
    """One row per evaluation set and metric, active beside candidate with their 95% intervals: the console's
    comparison table. ``comparable`` is False for a set of fewer than ``min_images`` images, whose figures
    differ by chance more than by model."""
    rows = []
    for part in comparison.sets if comparison is not None else ():
        for metric in COMPARED_METRICS:
            active, candidate = part.active, part.candidate
            rows.append({"set": part.name, "images": part.count, "metric": metric,
                         "active": active.get(metric), "active 95% CI": format_interval(metric_interval(metric, active)),
                         "candidate": candidate.get(metric),
                         "candidate 95% CI": format_interval(metric_interval(metric, candidate)),
                         "comparable": part.count >= min_images})
    return rows
