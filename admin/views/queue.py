"""Review queue: flagged, unreviewed images as a grid; one click labels an image (Fake / Real) or skips it for
this session, several can be selected and labelled at once, and the last decision can be undone.

Buttons act in on_click callbacks, which run before the page is drawn again: the labelled image is already
gone and the next one already shown when the page comes back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

import streamlit as st

from admin.auth import allowed, current_actor, require_user
from admin.context import console_settings, session_scope
from admin.notices import flash, show_flash
from admin.thumbnails import thumbnail
from backend.matching import copy_rule
from backend.reviews import (
    QueueFilters,
    QueueItem,
    label_images,
    queue_size,
    review_queue,
    undo_last_decision,
)
from core.enums import FLAGGED_VERDICTS, Label, Permission, Source, VerdictSource
from core.errors import FakewatchError

PAGE_SIZE = 12
GRID_COLUMNS = 4
SKIPPED_KEY = "queue_skipped"
ORDERS = {"Oldest first": "oldest", "Highest score first": "highest_score"}


def skipped_ids() -> set[int]:
    skipped: set[int] = st.session_state.setdefault(SKIPPED_KEY, set())
    return skipped


def _day_bounds(chosen: Sequence[date]) -> tuple[datetime | None, datetime | None]:
    """A date_input range as [start of first day, start of the day after the last day), in UTC."""
    if not chosen:
        return None, None
    start = datetime.combine(chosen[0], time.min, UTC)
    end = datetime.combine(chosen[-1], time.min, UTC) + timedelta(days=1)
    return start, end


def read_filters() -> QueueFilters:
    with st.sidebar:
        st.subheader("Filters")
        # A link from the Batches page (/queue?batch=ID) sets the batch filter each time it is followed.
        linked_batch = str(st.query_params.get("batch", ""))
        if st.session_state.get("queue_batch_link") != linked_batch:
            st.session_state["queue_batch_link"] = st.session_state["queue_batch"] = linked_batch
        verdicts = st.multiselect("Verdict", FLAGGED_VERDICTS, default=list(FLAGGED_VERDICTS), key="queue_verdicts")
        sources = st.multiselect("Source", list(Source), key="queue_sources")
        batch_id = st.text_input("Batch id", key="queue_batch")
        days = st.date_input("Checked between", value=[], key="queue_days")
        low, high = st.slider("Score", 0.0, 1.0, (0.0, 1.0), step=0.01, key="queue_scores")
        order = st.radio("Order", list(ORDERS), key="queue_order")
    created_from, created_to = _day_bounds(list(days) if isinstance(days, tuple | list) else [days])
    return QueueFilters(verdicts=tuple(verdicts) or FLAGGED_VERDICTS, sources=tuple(sources),
                        batch_id=batch_id.strip() or None, created_from=created_from, created_to=created_to,
                        min_score=low, max_score=high, order=ORDERS[order])


def decide(image_ids: list[int], check_ids: list[str], label: Label) -> None:
    """Record one decision (on_click callback)."""
    actor = current_actor()
    if actor is None:
        return
    try:
        with session_scope() as session:
            decision = label_images(session, image_ids, label, actor, check_ids=check_ids,
                                    copies=copy_rule(console_settings()))
    except FakewatchError as error:
        flash("error", error.message)
        return
    for image_id in decision.image_ids:
        st.session_state.pop(f"select_{image_id}", None)
    copies = f", {len(decision.copies)} of them as near-copies" if decision.copies else ""
    flash("success", f"Labelled {len(decision.image_ids)} image(s) {label}{copies}.")


def decide_selected(items: list[QueueItem], label: Label) -> None:
    chosen = [item for item in items if st.session_state.get(f"select_{item.image_id}")]
    if not chosen:
        flash("error", "Select images first (the checkbox on each card).")
        return
    decide([item.image_id for item in chosen], [item.check_id for item in chosen], label)


def skip(image_id: int) -> None:
    skipped_ids().add(image_id)


def select_all(items: list[QueueItem]) -> None:
    for item in items:
        st.session_state[f"select_{item.image_id}"] = True


def undo() -> None:
    actor = current_actor()
    if actor is None:
        return
    try:
        with session_scope() as session:
            decision = undo_last_decision(session, actor)
    except FakewatchError as error:
        flash("error", error.message)
        return
    if decision is None:
        flash("error", "Nothing to undo: you have not labelled anything yet.")
    else:
        skipped_ids().difference_update(decision.image_ids)
        flash("success", f"Undid labelling {len(decision.image_ids)} image(s) {decision.label}.")


def render_card(item: QueueItem) -> None:
    with st.container(border=True):
        preview = thumbnail(item.storage_key)
        if preview:
            st.image(preview, width="stretch")
        else:
            st.caption("The stored image file is missing.")
        decided = f" · by {item.verdict_source}" if item.verdict_source not in (None, VerdictSource.MODEL) else ""
        st.markdown(f"**{item.verdict}**{decided} · score **{item.score:.3f}** · {item.source}")
        if item.evidence:  # metadata text (signer names...) comes from the file: plain text, never markdown
            st.text(item.evidence[:160])
        # Page URLs come from users: shown as plain text, never rendered as markdown or links.
        st.text((item.page_url or item.source_url or "no page URL")[:90])
        if item.copies:
            st.caption(f"+ {len(item.copies)} near-cop{'y' if len(item.copies) == 1 else 'ies'} waiting: "
                       "labelling this image labels them too (Real: only those the model did not call fake).")
        st.page_link("views/image.py", label="Image details", query_params={"sha256": item.sha256},
                     icon=":material/open_in_new:")
        if not allowed(Permission.LABEL):  # a viewer sees the queue, without the labelling controls
            return
        st.checkbox("Select", key=f"select_{item.image_id}")
        fake, real, skip_column = st.columns(3)
        fake.button("Fake", key=f"fake_{item.image_id}", type="primary", width="stretch",
                    on_click=decide, args=([item.image_id], [item.check_id], Label.FAKE))
        real.button("Real", key=f"real_{item.image_id}", width="stretch",
                    on_click=decide, args=([item.image_id], [item.check_id], Label.REAL))
        skip_column.button("Skip", key=f"skip_{item.image_id}", width="stretch", on_click=skip, args=(item.image_id,))


def render_grid(items: list[QueueItem]) -> None:
    for start in range(0, len(items), GRID_COLUMNS):
        for column, item in zip(st.columns(GRID_COLUMNS), items[start : start + GRID_COLUMNS], strict=False):
            with column:
                render_card(item)


def render_queue() -> None:
    require_user()
    st.title("Review queue")
    filters = read_filters()
    skipped = sorted(skipped_ids())
    with session_scope() as session:
        items = review_queue(session, filters, limit=PAGE_SIZE, exclude_image_ids=skipped,
                             copies=copy_rule(console_settings()))
        waiting = queue_size(session, filters, exclude_image_ids=skipped)
    show_flash()
    summary, undo_column, unskip_column = st.columns([3, 1, 1])
    summary.markdown(f"**{waiting}** image(s) waiting" + (f", {len(skipped)} skipped this session" if skipped else ""))
    labelling = allowed(Permission.LABEL)
    if labelling:
        undo_column.button("Undo my last decision", key="undo", on_click=undo, icon=":material/undo:")
    if skipped:
        unskip_column.button("Show skipped again", key="unskip", on_click=skipped_ids().clear)
    if not items:
        st.info("Nothing to review under these filters.")
        return
    if not labelling:
        render_grid(items)
        return
    bulk = st.columns([1, 1, 1, 3])
    bulk[0].button("Select all shown", key="select_all", on_click=select_all, args=(items,))
    bulk[1].button("Label selected Fake", key="bulk_fake", on_click=decide_selected, args=(items, Label.FAKE))
    bulk[2].button("Label selected Real", key="bulk_real", on_click=decide_selected, args=(items, Label.REAL))
    render_grid(items)


render_queue()
