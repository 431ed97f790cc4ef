"""Batches: submit a list of image URLs (pasted or uploaded), follow running batches live, read and download
a batch's results, and jump to its flagged images in the review queue. Everything goes through
backend/batches/, the same functions the API's batch endpoints call, and a batch is shown as the API's BatchOut
dumps it."""

from __future__ import annotations

from itertools import islice
from typing import Any

import pandas as pd
import streamlit as st

from admin.auth import allowed, current_actor, require_user
from admin.context import console_settings, session_scope
from admin.notices import flash, show_flash
from backend.batches.lifecycle import CreatedBatch, cancel_batch, get_batch, submit_list
from backend.batches.lists import entries_from_file, entries_from_text
from backend.batches.progress import list_batches, summarize
from backend.batches.results import ResultFilter, format_results, iter_results
from backend.identity.access import require
from backend.shapes import BatchOut
from core.enums import BatchStatus, Permission
from core.errors import FakewatchError, Forbidden

LIVE_REFRESH_S = 2.0
SHOWN_RESULTS = 1000
FILTERS: dict[str, ResultFilter] = {"All": "all", "Flagged": "flagged", "Failed": "failed"}
# The batch summary's count of the rows each filter keeps.
FILTER_COUNTS: dict[ResultFilter, str] = {"all": "total", "flagged": "flagged", "failed": "failed"}


def submit_form(name: str, pasted: str, upload: Any) -> CreatedBatch:
    """Parse the pasted text and the uploaded file (a .csv's `url` column, else one URL per line), then create
    and enqueue the batch."""
    actor = current_actor()
    if actor is None:
        raise Forbidden("Log in again: your session ended.")
    require(actor, Permission.SUBMIT)
    entries = entries_from_text(pasted)
    if upload is not None:
        entries += entries_from_file(upload.getvalue(), upload.name)
    if not entries:
        raise FakewatchError("invalid_request", "Paste URLs (one per line) or upload a .txt or .csv file.")
    with session_scope() as session:
        return submit_list(session, entries, console_settings(), name=name.strip() or f"console ({actor.name})")


def render_submit_form() -> None:
    with st.form("new_batch", clear_on_submit=True):
        st.subheader("New batch")
        name = st.text_input("Name", key="batch_name", max_chars=200)
        pasted = st.text_area("Image URLs, one per line", key="batch_urls", height=150)
        upload = st.file_uploader("…or a .txt / .csv file (with a `url` column)", type=["txt", "csv"], key="batch_file")
        submitted = st.form_submit_button("Submit batch", type="primary")
    if not submitted:
        return
    try:
        created = submit_form(name, pasted, upload)
    except FakewatchError as error:
        st.error(error.message)
        return
    invalid = len(created.batch.invalid or [])
    st.success(f"Batch {created.batch.id} accepted: {created.batch.total} URL(s), {invalid} invalid line(s), "
               f"{created.duplicates} duplicate(s).")
    st.session_state["batch_selected"] = created.batch.id


def render_progress(batches: list[dict[str, Any]]) -> None:
    for batch in batches:
        finished = batch["done"] + batch["failed"] + batch["cancelled"]
        share = finished / batch["total"] if batch["total"] else 1.0
        eta = f", about {batch['eta_s']:.0f} s left" if batch.get("eta_s") else ""
        st.progress(min(share, 1.0), text=f"{batch['name'] or batch['id']}: {finished}/{batch['total']} "
                                          f"({batch['status']}, {batch['flagged']} flagged{eta})")


@st.fragment(run_every=LIVE_REFRESH_S)
def render_batch_list() -> None:
    """Re-drawn every few seconds on its own, so running batches' bars move without reloading the page."""
    with session_scope() as session:
        summaries, total = list_batches(session, per_page=50)
        batches: list[dict[str, Any]] = BatchOut(many=True).dump(summaries)
    if not batches:
        st.info("No batch yet.")
        return
    live = [batch for batch in batches if not BatchStatus(batch["status"]).is_final]
    if live:
        st.subheader("Running")
        render_progress(live)
    st.subheader(f"All batches ({total})")
    table = pd.DataFrame([{key: batch[key] for key in ("id", "name", "status", "total", "done", "failed", "flagged",
                                                        "cancelled", "created_at")} for batch in batches])
    st.dataframe(table, hide_index=True, width="stretch")


def cancel(batch_id: str) -> None:
    actor = current_actor()
    if actor is None:
        return
    try:
        with session_scope() as session:
            cancel_batch(session, batch_id, actor=actor)
    except FakewatchError as error:
        flash("error", error.message)
        return
    flash("success", f"Batch {batch_id} cancelled; items already running will finish.")


def results_csv(batch_id: str, only: ResultFilter) -> str:
    """Every result row as CSV; built only when the download is clicked."""
    with session_scope() as session:
        return "".join(format_results(iter_results(session, batch_id, only), "csv"))


def render_results() -> None:
    st.subheader("Results")
    with session_scope() as session:
        summaries, _ = list_batches(session, per_page=200)
    ids = [summary.batch.id for summary in summaries]
    if not ids:
        return
    labels = {summary.batch.id: f"{summary.batch.name or '(no name)'} · {summary.batch.id[:8]} · {summary.batch.status}"
              for summary in summaries}
    selected = st.session_state.get("batch_selected")
    chosen = st.selectbox("Batch", ids, format_func=labels.__getitem__, key="batch_choice",
                          index=ids.index(selected) if selected in ids else 0)
    only = FILTERS[st.radio("Show", list(FILTERS), horizontal=True, key="batch_filter")]
    with session_scope() as session:
        summary: dict[str, Any] = BatchOut().dump(summarize(session, get_batch(session, chosen)))
        rows = list(islice(iter_results(session, chosen, only), SHOWN_RESULTS))
    actions = st.columns(3)
    actions[0].download_button("Download CSV", data=lambda: results_csv(chosen, only), mime="text/csv",
                               file_name=f"batch-{chosen}-{only}.csv", key="batch_download")
    actions[1].page_link("views/queue.py", label=f"Review its {summary['flagged']} flagged image(s)",
                         query_params={"batch": chosen}, icon=":material/fact_check:")
    if not BatchStatus(summary["status"]).is_final and allowed(Permission.CANCEL_BATCH):
        actions[2].button("Cancel batch", key="batch_cancel", on_click=cancel, args=(chosen,))
    if summary["invalid"]:
        with st.expander(f"{len(summary['invalid'])} invalid line(s)"):
            st.dataframe(pd.DataFrame(summary["invalid"]), hide_index=True, width="stretch")
    count = summary[FILTER_COUNTS[only]]
    st.caption(f"{count} row(s)" + (f"; showing the first {SHOWN_RESULTS}" if count > SHOWN_RESULTS else ""))
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def render_batches() -> None:
    require_user()
    st.title("Batches")
    show_flash()
    if allowed(Permission.SUBMIT):
        render_submit_form()
    render_batch_list()
    render_results()


render_batches()
