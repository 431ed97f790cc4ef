"""Models: every registered version with its validation metrics, which one is active, and its training curves;
the retraining controls (admin/retraining.py) close the page."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from admin.auth import require_user
from admin.context import console_settings, session_scope
from admin.curves import history_frame, render_curves
from admin.retraining import render_retraining
from admin.tables import cell_text, dash_missing
from backend.storage.schema import ModelVersion
from backend.training.versions import list_versions

SHOWN_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "tpr_at_5pct_fpr", "fpr_at_threshold", "ece")


def split_metrics(version: ModelVersion, min_images: int) -> dict[str, Any]:
    """The validation split's headline metrics (or the first split recorded) with its image count. A split of
    fewer than ``min_images`` images (a retrain on a handful of reviews validates on 3) shows no figures: they would
    read as comparable with the others when they are mostly chance."""
    metrics = version.metrics or {}
    split = metrics.get("valid") or next((value for value in metrics.values() if isinstance(value, dict)), {})
    count = (split.get("counts") or {}).get("total")
    comparable = count is None or count >= min_images  # versions registered without counts keep their figures
    shown = {name: split.get(name) if comparable else None for name in SHOWN_METRICS}
    note = "" if comparable else f"{count} validation image(s): too few to compare"
    return {"valid images": count, **shown, "metrics": note}


def versions_table(versions: list[ModelVersion]) -> pd.DataFrame:
    """Each version's identity and decision settings ("last active": a dash for one never active)."""
    return dash_missing(pd.DataFrame([{
        "active": version.active, "name": version.name, "architecture": version.architecture,
        "created": version.created_at, "last active": cell_text(version.activated_at), "threshold": version.threshold,
        "band": version.band} for version in versions]))


def metrics_table(versions: list[ModelVersion], min_images: int) -> pd.DataFrame:
    """Each version's validation metrics: a table of its own, so that both fit a laptop's screen."""
    rows = [{"name": version.name, **split_metrics(version, min_images)} for version in versions]
    for row in rows:  # a count, not a fraction, even beside a missing one
        row["valid images"] = cell_text(row["valid images"])
    return dash_missing(pd.DataFrame(rows))


# Short headers (the full name in each column's tooltip), so that the metrics fit 1366 px without scrolling.
METRIC_COLUMNS = {
    "valid images": st.column_config.TextColumn("images", help="Validation images the figures come from"),
    "accuracy": st.column_config.Column("acc.", help="Accuracy"),
    "balanced_accuracy": st.column_config.Column("bal. acc.", help="Balanced accuracy"),
    "roc_auc": st.column_config.Column("ROC AUC", help="Area under the ROC curve"),
    "tpr_at_5pct_fpr": st.column_config.Column("TPR @ 5% FPR", help="True-positive rate at a 5% false-positive rate"),
    "fpr_at_threshold": st.column_config.Column("FPR", help="False-positive rate at the version's threshold"),
    "ece": st.column_config.Column("ECE", help="Expected calibration error"),
    "metrics": st.column_config.TextColumn("note"),
}


def render_version_curves(version: ModelVersion) -> None:
    history: dict[str, list[float]] = (version.details or {}).get("history") or {}
    if not history:
        st.caption("This version's metadata has no training history.")
        return
    render_curves(history_frame(history))


def render_models() -> None:
    require_user()
    st.title("Models")
    with session_scope() as session:
        versions = list_versions(session)
    if not versions:
        st.info("No model version is registered. `fakewatch db upgrade` registers the shipped default.")
    else:
        active = next((v.name for v in versions if v.active), None)
        st.markdown(f"Active version: **{active}**" if active else "No version is active: nothing can be scored.")
        columns = {"active": st.column_config.CheckboxColumn(),
                   "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")}
        minimum = console_settings().promotion_min_heldout
        st.dataframe(versions_table(versions), hide_index=True, width="stretch", column_config=columns)
        st.subheader("Validation metrics")
        st.dataframe(metrics_table(versions, minimum), hide_index=True, width="stretch", column_config=METRIC_COLUMNS)
        st.caption(f"Validation metrics of a version measured on fewer than {minimum} images are left blank: that few "
                   "images cannot tell two models apart.")
        st.subheader("Training curves")
        names = [v.name for v in versions]
        chosen = st.selectbox("Version", names, index=names.index(active) if active else 0, key="models_version")
        render_version_curves(next(v for v in versions if v.name == chosen))
    render_retraining(versions)


render_models()
