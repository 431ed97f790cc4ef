"""Retraining controls at the end of the console's Models page: start a run on the moderators' labels, follow it
live (epoch, progress bar, curves; cancel), compare the candidate with the active version on the same data, and
promote it or roll back. Every action is a backend/training/ or backend/training/versions.py service, and a run is
shown as the API's RunOut dumps it; no rule is decided here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from admin.auth import allowed, current_actor
from admin.context import console_settings, session_scope
from admin.curves import history_frame, render_curves
from admin.notices import flash, show_flash
from backend.identity.access import Actor
from backend.shapes import RunOut
from backend.storage.schema import ModelVersion
from backend.training.comparison import comparison_rows
from backend.training.data import assemble_training_data
from backend.training.rescoring import rescore_flagged
from backend.training.runs import cancel_run, get_run, latest_run, start_training
from backend.training.versions import check_promotion, promote_version, roll_back, rollback_candidates
from core.enums import Permission, RunStatus
from core.errors import FakewatchError, Forbidden
from core.retraining import HELDOUT_SET, Comparison

LIVE_REFRESH_S = 2.0


def render_retraining(versions: list[ModelVersion]) -> None:
    """The section under the Models page's table; ``versions`` is the list that page already loaded, newest first."""
    st.divider()
    st.header("Retrain on moderators' labels")
    with session_scope() as session:
        data = assemble_training_data(session, console_settings()).summary()
        run = latest_run(session)
        body: dict[str, Any] | None = RunOut().dump(run) if run is not None else None
        earlier = rollback_candidates(session)
        current = next((version for version in versions if version.active), None)
    _render_data_summary(data)
    busy = body is not None and RunStatus(body["status"]).is_active
    if allowed(Permission.TRAIN):
        _render_request_form(busy)
    if body is not None and busy:
        # Only a run still going needs redrawing on its own; a finished one is drawn once, from what was loaded.
        st.fragment(_live_run, run_every=LIVE_REFRESH_S)(body["id"])
    elif body is not None:
        _run_panel(body)
        if body["status"] == RunStatus.DONE and body["candidate"]:
            _render_comparison(body)
    if allowed(Permission.PROMOTE):
        _render_roll_back(earlier, current)


def _actor() -> Actor:
    actor = current_actor()
    if actor is None:
        raise Forbidden("Log in again: your session ended.")
    return actor


def _act(action: Callable[[Any], Any], success: str, place: str) -> None:
    """Run one service call in its own transaction; show its result (or its refusal) after the rerun, at ``place``:
    beside the control that asked for it."""
    try:
        with session_scope() as session:
            result = action(session)
        flash("success", success.format(result=result), place)
    except FakewatchError as error:
        flash("error", error.message, place)
    st.rerun()


def _render_data_summary(data: dict[str, Any]) -> None:
    train, heldout = data["reviewed_train"], data["reviewed_heldout"]
    st.markdown(f"Reviewed images: **{train['real'] + heldout['real']} real, {train['fake'] + heldout['fake']} fake** "
                f"({sum(heldout.values())} held out for the comparison, chosen by their SHA-256).")
    bases = ", ".join(f"`{name}`" for name in data["base_datasets"]) or "none (set FAKEWATCH_TRAINING_DATASETS)"
    st.caption(f"Base datasets: {bases}")


def _render_request_form(busy: bool) -> None:
    with st.form("retrain_form"):
        scratch = st.checkbox("Train from scratch (instead of fine-tuning the active version)", key="retrain_scratch")
        settings = console_settings()
        epochs = st.number_input("Epochs", min_value=1, max_value=settings.training_max_epochs,
                                 value=settings.training_epochs, step=1, key="retrain_epochs")
        submitted = st.form_submit_button("Retrain", type="primary", disabled=busy)
    show_flash("retrain")
    if busy:
        st.caption("A training run is in progress: one at a time.")
    if submitted:
        _act(lambda session: start_training(session, console_settings(), actor=_actor(), from_scratch=scratch,
                                            epochs=int(epochs)),
             "Training run {result.id} queued.", "retrain")


def _live_run(run_id: str) -> None:
    """Re-run every few seconds while the run is active; the whole page reruns once it ends."""
    with session_scope() as session:
        body: dict[str, Any] = RunOut().dump(get_run(session, run_id))
    if not RunStatus(body["status"]).is_active:
        st.rerun(scope="app")
    _run_panel(body)


def _run_panel(body: dict[str, Any]) -> None:
    st.subheader(f"Training run {body['id'][:8]}: {body['status']}")
    epochs = max(int(body["epochs"] or 1), 1)
    st.progress(min(body["epoch"] / epochs, 1.0), text=f"{body['phase']}: epoch {body['epoch']} of {epochs}")
    if body["error"]:
        (st.warning if body["status"] == RunStatus.CANCELLED else st.error)(body["error"])
    if body["history"]:
        frame = history_frame(body["history"])
        st.dataframe(frame.tail(1), width="stretch")
        render_curves(frame)
    if RunStatus(body["status"]).is_active:
        if body["cancel_requested"]:
            st.caption("Cancel requested: the run stops within a few seconds.")
        elif allowed(Permission.TRAIN) and st.button("Cancel training", key="retrain_cancel"):
            run_id = body["id"]
            _act(lambda session: cancel_run(session, run_id, actor=_actor()), "Cancel requested for run {result.id}.",
                 "run")
    show_flash("run")


COMPARISON_COLUMNS = ["set", "images", "metric", "active", "active 95% CI", "candidate", "candidate 95% CI",
                      "comparable"]


# Short headers (the full meaning in each tooltip) and fixed widths, so that the table fits 1366 px unscrolled.
COMPARISON_LABELS = {
    "set": st.column_config.TextColumn("set", width=170),
    "images": st.column_config.NumberColumn("images", width=55),
    "metric": st.column_config.TextColumn("metric", width=120),
    "active": st.column_config.NumberColumn("active", format="%.3f", width=60),
    "active 95% CI": st.column_config.TextColumn("active CI", help="95% confidence interval", width=105),
    "candidate": st.column_config.NumberColumn("candidate", format="%.3f", width=75),
    "candidate 95% CI": st.column_config.TextColumn("cand. CI", help="95% confidence interval", width=105),
    "comparable": st.column_config.CheckboxColumn("comparable", help="Enough images for the figures to compare "
                                                  "the two versions", width=85),
    "change": st.column_config.NumberColumn("change", format="%+.3f", help="candidate minus active", width=60),
}


def comparison_table(comparison: dict[str, Any] | None, min_images: int = 0) -> pd.DataFrame:
    """Candidate beside active, per evaluation set and metric, with their 95% intervals and the difference."""
    typed = Comparison.from_dict(comparison) if comparison else None
    frame = pd.DataFrame(comparison_rows(typed, min_images), columns=COMPARISON_COLUMNS)
    frame["change"] = pd.to_numeric(frame["candidate"]) - pd.to_numeric(frame["active"])
    return frame


def _render_comparison(body: dict[str, Any]) -> None:
    candidate = body["candidate"]
    comparison = body["comparison"] or {}
    minimum = console_settings().promotion_min_heldout
    st.subheader("Candidate vs active")
    st.caption(f"Candidate **{candidate['name']}** against **{comparison.get('active_version')}** (active when it was "
               "measured), on the same images, each at its own threshold, with 95% confidence intervals. A set of "
               f"fewer than {minimum} images is not comparable: its figures move more by chance than by model.")
    st.dataframe(comparison_table(comparison, minimum), hide_index=True, width="stretch",
                 column_config=COMPARISON_LABELS)
    names = [part["name"] for part in comparison.get("sets", [])]
    if not any(name != HELDOUT_SET for name in names):
        st.caption("No base dataset's validation split was measured (none is configured or present): only the "
                   "held-out reviewed images, so what the candidate forgot of the base data is not shown.")
    if candidate["active"]:
        st.success(f"{candidate['name']} is active.")
        show_flash("promotion")
        return
    with session_scope() as session:
        guard = check_promotion(session, candidate["id"], console_settings())
    if guard.refusals:
        st.warning("Promotion is refused: " + " ".join(guard.refusals))
    else:
        st.success(f"Passes the promotion guard: {guard.heldout_images} held-out reviewed images, false-positive rate "
                   "no worse than the active version's.")
    if not allowed(Permission.PROMOTE):
        return
    reason = ""
    if guard.refusals:
        reason = st.text_input("Override: why promote it anyway (admins; kept with the activation)",
                               key="retrain_override_reason", max_chars=500)
    rescore = st.checkbox("Re-score flagged images with it, as a batch", key="retrain_rescore")
    label = f"Promote {candidate['name']}" + (" anyway" if guard.refusals else "")
    if st.button(label, type="primary", key="retrain_promote"):
        _act(lambda session: _promote(session, candidate["id"], rescore, reason), "{result}", "promotion")
    show_flash("promotion")


def _promote(session: Any, version_id: int, rescore: bool, override_reason: str) -> str:
    # Promoting (and so overriding the guard) is Permission.PROMOTE, an admin's: promote_version checks and audits.
    version = promote_version(session, version_id, console_settings(), actor=_actor(),
                              override_reason=override_reason or None)
    message = f"{version.name} is active: workers score with it from their next batch."
    if rescore:
        session.commit()
        batch = rescore_flagged(session, console_settings(), requested_by=_actor().label)
        message += f" Re-scoring {batch.total} flagged images as batch {batch.id}." if batch else " No flagged images."
    return message


def _render_roll_back(earlier: list[ModelVersion], current: ModelVersion | None) -> None:
    """``earlier``: the versions that were active before, most recently active first (never a mere candidate)."""
    if not earlier:
        show_flash("rollback")  # the last roll back may have left nothing to roll back to
        return
    st.subheader("Roll back")
    by_name = {version.name: version for version in earlier}
    chosen = st.selectbox("Version to make active again (versions that were active before, newest first)",
                          list(by_name), key="retrain_rollback_choice",
                          format_func=lambda name: f"{name} (last active {by_name[name].activated_at:%Y-%m-%d %H:%M} UTC)")
    label = f"Roll back from {current.name}" if current is not None else "Activate"
    if st.button(label, key="retrain_rollback"):
        version_id = by_name[str(chosen)].id
        _act(lambda session: roll_back(session, version_id, actor=_actor()), "{result.name} is active again.",
             "rollback")
    show_flash("rollback")
