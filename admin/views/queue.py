"""Review queue: flagged, unreviewed images as a grid, a page at a time through the whole queue; one click labels
an image (Fake / Real), skips it for this session or escalates it to a second review with a note; several, a
page or every image matching the filters can be labelled at once (with a count and a confirmation); the last
decision can be undone. Keys act on the first card: F fake, G real (genuine), S skip, U undo.

Buttons act in on_click callbacks, which run before the page is drawn again: the labelled image is already
gone and the next one already shown when the page comes back. No button is highlighted, so no label is the
default."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

import streamlit as st

from admin.auth import allowed, current_actor, require_user
from admin.context import console_settings, session_scope
from admin.evidence import evidence_lines, verdict_line
from admin.notices import flash, show_flash
from admin.thumbnails import thumbnail
from backend.matching.lookups import copy_rule
from backend.moderation.reviews import (
    QueueFilters,
    QueueItem,
    escalate_images,
    escalated_count,
    label_images,
    queue_image_ids,
    queue_size,
    review_queue,
    undo_last_decision,
)
from core.enums import FLAGGED_VERDICTS, Label, Permission, Source
from core.errors import FakewatchError

PAGE_SIZE = 24
GRID_COLUMNS = 4
SKIPPED_KEY = "queue_skipped"
PAGE_KEY = "queue_page"
ALL_KEY = "queue_all"  # every image matching the filters, selected: {"ids": [...], "filters": ...}
CONFIRM_KEY = "queue_confirm"  # the label waiting for confirmation of a select-all decision
FILTERS_SEEN_KEY = "queue_filters_seen"
ORDERS = {"Oldest first": "oldest", "Highest score first": "highest_score"}
QUEUES = {"Main queue": False, "Second review (escalated)": True}
NO_REASON = "(no reason)"
# Streamlit reserves C and R for itself, so "real" is G (genuine).
SHORTCUTS = {Label.FAKE: "F", Label.REAL: "G", "skip": "S", "undo": "U"}


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


def read_filters(escalated_waiting: int) -> QueueFilters:
    with st.sidebar:
        st.subheader("Filters")
        which = st.radio("Queue", list(QUEUES), key="queue_which",
                         format_func=lambda name: f"{name} ({escalated_waiting})" if QUEUES[name] else name)
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
                        min_score=low, max_score=high, order=ORDERS[order], escalated=QUEUES[which])


def _forget_selection_when_filters_change(filters: QueueFilters) -> None:
    """A page number or a select-all belongs to the filters it was made under."""
    if st.session_state.get(FILTERS_SEEN_KEY) != filters:
        st.session_state[FILTERS_SEEN_KEY] = filters
        st.session_state[PAGE_KEY] = 0
        st.session_state.pop(ALL_KEY, None)
        st.session_state.pop(CONFIRM_KEY, None)


def _reason() -> str | None:
    chosen = st.session_state.get("queue_reason")
    return None if not chosen or chosen == NO_REASON else str(chosen)


def decide(image_ids: list[int], check_ids: list[str | None], label: Label) -> None:
    """Record one decision (on_click callback), with the reason chosen above the grid."""
    actor = current_actor()
    if actor is None:
        return
    try:
        with session_scope() as session:
            decision = label_images(session, image_ids, label, actor, check_ids=check_ids,
                                    copies=copy_rule(console_settings()), reason=_reason(),
                                    reasons=console_settings().review_reasons)
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


def escalate(item: QueueItem) -> None:
    actor = current_actor()
    if actor is None:
        return
    note = str(st.session_state.get(f"escalate_note_{item.image_id}") or "")
    try:
        with session_scope() as session:
            escalate_images(session, [item.image_id], note, actor, check_ids=[item.check_id])
    except FakewatchError as error:
        flash("error", error.message)
        return
    flash("success", "Sent to the second-review queue.")


def select_page(items: list[QueueItem]) -> None:
    for item in items:
        st.session_state[f"select_{item.image_id}"] = True


def select_all_matching(filters: QueueFilters) -> None:
    with session_scope() as session:
        ids = queue_image_ids(session, filters, exclude_image_ids=sorted(skipped_ids()))
    st.session_state[ALL_KEY] = {"ids": ids, "filters": filters}
    st.session_state.pop(CONFIRM_KEY, None)


def clear_all_selection() -> None:
    st.session_state.pop(ALL_KEY, None)
    st.session_state.pop(CONFIRM_KEY, None)


def ask_to_confirm(label: Label) -> None:
    st.session_state[CONFIRM_KEY] = label


def confirm_all(filters: QueueFilters) -> None:
    """Label every selected image that still waits under the filters (someone may have labelled some since)."""
    selection = st.session_state.get(ALL_KEY) or {}
    label = st.session_state.get(CONFIRM_KEY)
    if not selection or label is None:
        return
    with session_scope() as session:
        waiting = set(queue_image_ids(session, filters))
    ids = [image_id for image_id in selection["ids"] if image_id in waiting]
    clear_all_selection()
    if not ids:
        flash("info", "Nothing left to label: every selected image was labelled meanwhile.")
        return
    decide(ids, [None] * len(ids), Label(label))
    st.session_state[PAGE_KEY] = 0


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


def turn_page(step: int) -> None:
    st.session_state[PAGE_KEY] = max(0, int(st.session_state.get(PAGE_KEY, 0)) + step)


def render_card(item: QueueItem, first: bool) -> None:
    with st.container(border=True):
        preview = thumbnail(item.storage_key)
        if preview:
            st.image(preview, width="stretch")
        else:
            st.caption("The stored image file is missing.")
        st.text(verdict_line(item.verdict, item.score, item.confidence, item.verdict_source))
        if item.evidence:  # metadata text (signer names...) comes from the file: plain text, never markdown
            st.text(item.evidence[:160])
        if item.match:
            st.text(evidence_lines(None, item.match)[0][:160])
        if item.escalation_note:
            st.text(f"Escalated by {item.escalated_by}: {item.escalation_note}"[:300])
        # Page URLs come from users: shown as plain text, never rendered as markdown or links.
        st.text(f"{item.source} · " + (item.page_url or item.source_url or "no page URL")[:90])
        if item.copies:
            st.caption(f"+ {len(item.copies)} near-cop{'y' if len(item.copies) == 1 else 'ies'} waiting: "
                       "labelling this image labels them too (Real: only those the model did not call fake).")
        st.page_link("views/image.py", label="Image details", query_params={"sha256": item.sha256},
                     icon=":material/open_in_new:")
        if not allowed(Permission.LABEL):  # a viewer sees the queue, without the labelling controls
            return
        st.checkbox("Select", key=f"select_{item.image_id}")
        # Shortcuts on the first card only: a key means one image. The buttons keep their natural width and flow
        # onto a second row when the card is narrow (a 1366-pixel screen), so no label is ever cut.
        keys = SHORTCUTS if first else {}
        actions = st.container(horizontal=True, gap="small")
        actions.button("Fake", key=f"fake_{item.image_id}", shortcut=keys.get(Label.FAKE),
                       on_click=decide, args=([item.image_id], [item.check_id], Label.FAKE))
        actions.button("Real", key=f"real_{item.image_id}", shortcut=keys.get(Label.REAL),
                       on_click=decide, args=([item.image_id], [item.check_id], Label.REAL))
        actions.button("Skip", key=f"skip_{item.image_id}", shortcut=keys.get("skip"), on_click=skip,
                       args=(item.image_id,))
        if item.escalation_note is None and allowed(Permission.ESCALATE):
            with actions.popover("Escalate", key=f"escalate_{item.image_id}"):
                st.text_input("Note for the second reviewer", key=f"escalate_note_{item.image_id}", max_chars=2000)
                st.button("Send to second review", key=f"escalate_send_{item.image_id}",
                          on_click=escalate, args=(item,))


def render_grid(items: list[QueueItem]) -> None:
    for start in range(0, len(items), GRID_COLUMNS):
        for column, item in zip(st.columns(GRID_COLUMNS), items[start : start + GRID_COLUMNS], strict=False):
            with column:
                render_card(item, first=start == 0 and item is items[0])


def render_select_all(filters: QueueFilters, waiting: int, items: list[QueueItem]) -> None:
    selection = st.session_state.get(ALL_KEY)
    row = st.container(horizontal=True)
    row.button("Select all shown", key="select_all", on_click=select_page, args=(items,))
    row.button(f"Select all {waiting} matching", key="select_all_matching", on_click=select_all_matching,
               args=(filters,))
    row.button("Label selected Fake", key="bulk_fake", on_click=decide_selected, args=(items, Label.FAKE))
    row.button("Label selected Real", key="bulk_real", on_click=decide_selected, args=(items, Label.REAL))
    if not selection:
        return
    count = len(selection["ids"])
    confirm = st.session_state.get(CONFIRM_KEY)
    with st.container(border=True):
        if confirm is None:
            st.warning(f"All **{count}** image(s) matching the filters are selected, on every page.")
            actions = st.container(horizontal=True)
            actions.button(f"Label all {count} Fake", key="bulk_all_fake", on_click=ask_to_confirm,
                           args=(Label.FAKE,))
            actions.button(f"Label all {count} Real", key="bulk_all_real", on_click=ask_to_confirm,
                           args=(Label.REAL,))
            actions.button("Clear selection", key="bulk_all_clear", on_click=clear_all_selection)
        else:
            st.warning(f"Label **{count}** image(s) **{confirm}**? This records {count} review(s) by you "
                       "(Undo takes the whole decision back).")
            actions = st.container(horizontal=True)
            actions.button(f"Confirm: label {count} {confirm}", key="bulk_confirm", on_click=confirm_all,
                           args=(filters,))
            actions.button("Cancel", key="bulk_cancel", on_click=clear_all_selection)


def render_pager(page: int, pages: int) -> None:
    row = st.container(horizontal=True, vertical_alignment="center")
    row.button("Previous page", key="page_previous", disabled=page == 0, on_click=turn_page, args=(-1,),
               icon=":material/chevron_left:")
    row.markdown(f"Page **{page + 1}** of **{pages}**")
    row.button("Next page", key="page_next", disabled=page + 1 >= pages, on_click=turn_page, args=(1,),
               icon=":material/chevron_right:")


def render_queue() -> None:
    require_user()
    st.title("Review queue")
    with session_scope() as session:
        escalated_waiting = escalated_count(session)
    filters = read_filters(escalated_waiting)
    _forget_selection_when_filters_change(filters)
    skipped = sorted(skipped_ids())
    with session_scope() as session:
        waiting = queue_size(session, filters, exclude_image_ids=skipped)
        pages = max(1, -(-waiting // PAGE_SIZE))
        page = min(int(st.session_state.get(PAGE_KEY, 0)), pages - 1)
        st.session_state[PAGE_KEY] = page
        items = review_queue(session, filters, limit=PAGE_SIZE, offset=page * PAGE_SIZE, exclude_image_ids=skipped,
                             copies=copy_rule(console_settings()))
    show_flash()
    summary = st.container(horizontal=True, vertical_alignment="center")
    summary.markdown(f"**{waiting}** image(s) waiting" + (f", {len(skipped)} skipped this session" if skipped else ""))
    labelling = allowed(Permission.LABEL)
    if labelling:
        summary.button("Undo my last decision", key="undo", on_click=undo, icon=":material/undo:",
                       shortcut=SHORTCUTS["undo"])
    if skipped:
        summary.button("Show skipped again", key="unskip", on_click=skipped_ids().clear)
    if not items:
        st.info("Nothing to review under these filters.")
        return
    if not labelling:  # a viewer sees the queue, without the labelling controls
        render_grid(items)
        render_pager(page, pages)
        return
    st.caption("Keys act on the first card: **F** fake, **G** real (genuine), **S** skip, **U** undo.")
    reasons = [NO_REASON, *console_settings().review_reasons]
    st.selectbox("Reason given with the next decisions (optional)", reasons, key="queue_reason")
    render_select_all(filters, waiting, items)
    render_grid(items)
    render_pager(page, pages)


render_queue()
