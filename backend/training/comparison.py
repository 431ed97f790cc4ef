"""The candidate-vs-active comparison a finished run carries (measured by worker/training.py): ``{"active_version",
"candidate_version", "measured_at", "sets": [{"name", "count", "candidate": metrics, "active": metrics}]}``, and
the table the console and ``fakewatch retrain --wait`` show from it."""

from __future__ import annotations

from typing import Any

COMPARED_METRICS = ("roc_auc", "accuracy", "fpr_at_threshold")


def comparison_rows(comparison: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per evaluation set and metric, active beside candidate: the console's comparison table."""
    rows = []
    for part in (comparison or {}).get("sets", []):
        for metric in COMPARED_METRICS:
            rows.append({"set": part["name"], "images": part["count"], "metric": metric,
                         "active": part["active"].get(metric), "candidate": part["candidate"].get(metric)})
    return rows
