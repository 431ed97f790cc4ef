"""Image: one stored image (``/image?sha256=...``, the address the extension links to), every check of it, its
reviews, and the same Fake / Real labelling as the queue."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from admin.auth import allowed, current_actor, require_user
from admin.context import console_settings, session_scope
from admin.notices import flash, show_flash
from admin.thumbnails import full_image
from backend.audit import EventFilters, event_dict, find_events
from backend.callbacks import deliveries_for_checks, describe_delivery
from backend.matching import CopySeen, copies_seen, copy_rule
from backend.reviews import ImageHistory, image_history, label_image
from backend.schema import CallbackDelivery
from backend.verdicts import provenance_summary
from core.enums import Label, Permission
from core.errors import FakewatchError


def label(image_id: int, label_name: Label) -> None:
    """on_click callback: record the moderator's label with the note typed beside the buttons."""
    actor = current_actor()
    if actor is None:
        return
    note = st.session_state.get("image_note") or None
    try:
        with session_scope() as session:
            label_image(session, image_id, label_name, actor, note=note, copies=copy_rule(console_settings()))
    except FakewatchError as error:
        flash("error", error.message)
        return
    st.session_state["image_note"] = ""
    flash("success", f"Labelled {label_name}.")


def checks_table(history: ImageHistory, deliveries: dict[str, CallbackDelivery] | None = None) -> pd.DataFrame:
    deliveries = deliveries or {}
    return pd.DataFrame([{
        "checked": check.created_at, "model version": check.model_version.name if check.model_version else None,
        "score": check.score, "verdict": check.verdict, "verdict source": check.verdict_source,
        "status": check.status, "source": check.source,
        "page URL": check.page_url or check.source_url, "batch": check.batch_id, "check id": check.id,
        "callback": describe_delivery(deliveries.get(check.id)),
    } for check in history.checks])


def reviews_table(history: ImageHistory) -> pd.DataFrame:
    return pd.DataFrame([{"at": review.created_at, "label": review.label, "by": review.reviewer,
                          "reason": review.reason, "note": review.note,
                          "as a near-copy": None if review.match_distance is None else
                          f"distance {review.match_distance}"} for review in history.reviews])


def copies_table(copies: list[CopySeen]) -> pd.DataFrame:
    return pd.DataFrame([{"distance": copy.distance, "label": copy.label, "size": f"{copy.image.width}×"
                          f"{copy.image.height}", "checks": copy.checks, "sources": ", ".join(copy.sources),
                          "pages": "\n".join(copy.page_urls), "sha256": copy.image.sha256} for copy in copies])


def render_provenance(provenance: dict[str, Any] | None) -> None:
    """The evidence read from the file's original bytes: its summary, the Content Credentials, every signal.
    All of it comes from the file (signer names, tool names), so it is shown as text and tables, never markdown."""
    st.subheader("Provenance")
    summary = provenance_summary(provenance)
    st.text(summary or "No provenance metadata. Metadata is easily stripped: its absence proves nothing.")
    if provenance and provenance.get("c2pa"):
        st.json(provenance["c2pa"], expanded=False)
    if provenance and provenance.get("signals"):
        st.dataframe(pd.DataFrame(provenance["signals"]), hide_index=True, width="stretch")


def render_labelling(history: ImageHistory) -> None:
    latest = history.reviews[0] if history.reviews else None
    st.markdown(f"Current label: **{latest.label}** by {latest.reviewer}" if latest else "Not reviewed yet.")
    if not allowed(Permission.LABEL):
        return
    st.text_input("Note (optional)", key="image_note", max_chars=2000)
    fake, real, _ = st.columns([1, 1, 4])
    fake.button("Fake", key="image_fake", type="primary", on_click=label, args=(history.image.id, Label.FAKE))
    real.button("Real", key="image_real", on_click=label, args=(history.image.id, Label.REAL))


def render_image_page() -> None:
    require_user()
    st.title("Image")
    sha256 = st.text_input("SHA-256", value=str(st.query_params.get("sha256", "")), key="image_sha256").strip()
    if not sha256:
        st.info("Open an image from the review queue, or paste its SHA-256.")
        return
    st.query_params["sha256"] = sha256
    try:
        with session_scope() as session:
            history = image_history(session, sha256)
            copies = copies_seen(session, console_settings(), history.image)
            deliveries = deliveries_for_checks(session, [check.id for check in history.checks])
    except FakewatchError as error:
        st.error(error.message)
        return
    show_flash()
    image = history.image
    picture, details = st.columns([3, 2])
    with picture:
        data = None if image.deleted_at else full_image(image.storage_key)
        if data:
            st.image(data)  # natural size up to the column width: small images stay sharp
        elif image.deleted_at:
            st.warning(f"This image was deleted on {image.deleted_at:%Y-%m-%d %H:%M} UTC; its checks are kept.")
        else:
            st.warning("The stored image file is missing.")
    with details:
        st.markdown(f"**{image.format}**, {image.width} × {image.height}, {image.byte_size:,} bytes")
        st.caption(f"SHA-256 {image.sha256} · first seen {image.first_seen:%Y-%m-%d %H:%M} UTC")
        render_labelling(history)
    render_provenance(image.provenance)
    st.subheader(f"Checks ({len(history.checks)})")
    st.dataframe(checks_table(history, deliveries), hide_index=True, width="stretch")
    st.subheader(f"Copies seen ({len(copies)})")
    if copies:
        st.dataframe(copies_table(copies), hide_index=True, width="stretch")
    else:
        st.caption("No other stored image is a near-copy of this one (PDQ hashes within the match distance).")
    st.subheader(f"Reviews ({len(history.reviews)})")
    if history.reviews:
        st.dataframe(reviews_table(history), hide_index=True, width="stretch")
    else:
        st.caption("No moderator has labelled this image yet.")
    render_history(image.sha256)


def render_history(sha256: str) -> None:
    """The image's own audit trail: every label, undo and deletion of these bytes, newest first."""
    with session_scope() as session:
        events = [event_dict(event) for event in find_events(session, EventFilters(object_type="image",
                                                                                   object_id=sha256))]
    st.subheader(f"History ({len(events)})")
    if not events:
        st.caption("Nothing has been done to this image yet.")
        return
    st.dataframe(pd.DataFrame([{"at": e["at"], "action": e["action"], "by": e["actor_name"], "role": e["actor_role"],
                                "before": (e["before"] or {}).get("label"), "after": (e["after"] or {}).get("label")}
                               for e in events]), hide_index=True, width="stretch", key="image_history")


render_image_page()
