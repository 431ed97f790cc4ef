"""Image: one stored image (``/image?sha256=...``, the address the extension links to), shown large with zoom and
the detector's heat map, what its checks say now (verdict, score, confidence, verdict source, evidence), every
check of it, its reviews and escalations, and the same labelling as the queue (with a reason) and escalation."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from admin.auth import allowed, current_actor, require_user
from admin.context import console_settings, session_scope
from admin.evidence import evidence_lines, verdict_line
from admin.heatmap import heatmap_png
from admin.notices import flash, show_flash
from admin.tables import MISSING, cell_text, dash_missing
from admin.thumbnails import data_url
from admin.video import render_video
from backend.checks.verdicts import decision_when_read, provenance_summary
from backend.delivery.callbacks import deliveries_for_checks, describe_delivery
from backend.identity.audit import EventFilters, event_dict, find_events
from backend.matching.lookups import CopySeen, copies_seen, copy_rule
from backend.moderation.reviews import ImageHistory, escalate_images, image_history, label_image
from backend.storage.schema import CallbackDelivery, Check
from backend.storage.store import image_store, read_stored
from core.decoding import decode_image
from core.enums import Label, Permission
from core.errors import FakewatchError
from core.policy import Decision

NO_REASON = "(no reason)"
ZOOMS = {"Fit to page": None, "100%": 1.0, "200%": 2.0, "400%": 4.0}
ZOOM_VIEW_PX = 720  # a zoomed image scrolls inside a box this tall


def label(image_id: int, label_name: Label) -> None:
    """on_click callback: record the moderator's label with the reason and note chosen beside the buttons."""
    actor = current_actor()
    if actor is None:
        return
    note = st.session_state.get("image_note") or None
    reason = st.session_state.get("image_reason")
    try:
        with session_scope() as session:
            label_image(session, image_id, label_name, actor, note=note, copies=copy_rule(console_settings()),
                        reason=None if not reason or reason == NO_REASON else str(reason),
                        reasons=console_settings().review_reasons)
    except FakewatchError as error:
        flash("error", error.message)
        return
    st.session_state["image_note"] = ""
    flash("success", f"Labelled {label_name}.")


def escalate(image_id: int) -> None:
    actor = current_actor()
    if actor is None:
        return
    try:
        with session_scope() as session:
            escalate_images(session, [image_id], str(st.session_state.get("image_escalate_note") or ""), actor)
    except FakewatchError as error:
        flash("error", error.message)
        return
    st.session_state["image_escalate_note"] = ""
    flash("success", "Sent to the second-review queue.")


def _decision(history: ImageHistory, check: Check) -> Decision:
    return decision_when_read(check, history.reviews[0] if history.reviews else None)


def checks_table(history: ImageHistory, deliveries: dict[str, CallbackDelivery] | None = None) -> pd.DataFrame:
    """What each check of these bytes decided (and its callback); where each came from is check_sources_table's."""
    deliveries = deliveries or {}
    rows = []
    for check in history.checks:
        decision = _decision(history, check)
        rows.append({
            "checked": check.created_at, "model version": check.model_version.name if check.model_version else None,
            "verdict": decision.verdict, "score": check.score, "confidence": decision.confidence,
            "verdict source": decision.source, "status": check.status,
            "callback": describe_delivery(deliveries.get(check.id)),
        })
    return dash_missing(pd.DataFrame(rows))


def check_sources_table(history: ImageHistory) -> pd.DataFrame:
    """Where each check came from: the page the image was seen on, the image's own address, its batch."""
    return dash_missing(pd.DataFrame([{"checked": check.created_at, "source": check.source, "page URL": check.page_url,
                                       "image URL": check.source_url, "batch": check.batch_id, "check id": check.id}
                                      for check in history.checks]))


# Fixed widths that add up to less than a laptop's content column (about 900 px at 1366x768): long values end in
# an ellipsis inside their cell (the whole value on hover) instead of pushing columns off the side.
CHECK_COLUMNS = {"checked": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm", width=125),
                 "model version": st.column_config.TextColumn(width=120), "verdict": st.column_config.TextColumn(width=70),
                 "score": st.column_config.Column(width=60), "confidence": st.column_config.Column(width=90),
                 "verdict source": st.column_config.TextColumn(width=120), "status": st.column_config.TextColumn(width=65),
                 "callback": st.column_config.TextColumn(width=200)}
SOURCE_COLUMNS = {"checked": CHECK_COLUMNS["checked"], "source": st.column_config.TextColumn(width=80),
                  "page URL": st.column_config.TextColumn(width=210), "image URL": st.column_config.TextColumn(width=210),
                  "batch": st.column_config.TextColumn(width=100), "check id": st.column_config.TextColumn(width=100)}


def reviews_table(history: ImageHistory) -> pd.DataFrame:
    return pd.DataFrame([{"at": review.created_at, "label": review.label, "reason": review.reason,
                          "by": review.reviewer, "note": review.note,
                          "as a near-copy": None if review.match_distance is None else
                          f"distance {review.match_distance}"} for review in history.reviews])


def copies_table(copies: list[CopySeen]) -> pd.DataFrame:
    return pd.DataFrame([{"distance": copy.distance, "label": copy.label, "size": f"{copy.image.width}×"
                          f"{copy.image.height}", "checks": copy.checks, "sources": ", ".join(copy.sources),
                          "pages": "\n".join(copy.page_urls), "sha256": copy.image.sha256} for copy in copies])


C2PA_FIELDS = {"state": "validation", "signer": "signed by", "issuer": "issuer", "signed_at": "signed at",
               "claim_generator": "made with", "digital_source_types": "source types", "errors": "failures"}


def c2pa_rows(c2pa: dict[str, Any]) -> pd.DataFrame:
    """The Content Credentials as field and value, the fields a moderator reads (no raw JSON)."""
    def text(value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(str(item.get("type", "")) if isinstance(item, dict) else str(item)
                             for item in value) or MISSING
        return cell_text(value)
    return pd.DataFrame([{"field": label, "value": text(c2pa.get(key))} for key, label in C2PA_FIELDS.items()])


def render_provenance(provenance: dict[str, Any] | None) -> None:
    """The evidence read from the file's original bytes: its summary, the Content Credentials, every signal.
    All of it comes from the file (signer names, tool names), so it is shown as text and tables, never markdown;
    as static tables, whose long details wrap instead of being cut at a laptop's width."""
    st.subheader("Provenance")
    summary = provenance_summary(provenance)
    st.text(summary or "No provenance metadata. Metadata is easily stripped: its absence proves nothing.")
    if provenance and provenance.get("c2pa"):
        st.caption("Content Credentials")
        st.table(c2pa_rows(provenance["c2pa"]).set_index("field"))
    if provenance and provenance.get("signals"):
        st.caption("Signals")
        signals = pd.DataFrame(provenance["signals"], columns=["kind", "says", "detail", "source"])
        st.table(dash_missing(signals).set_index("kind"))


def escalations_table(history: ImageHistory) -> pd.DataFrame:
    return pd.DataFrame([{"at": row.created_at, "by": row.escalated_by, "note": row.note,
                          "settled": row.resolved_at, "settled by": row.resolved_by} for row in history.escalations])


def render_labelling(history: ImageHistory) -> None:
    latest = history.reviews[0] if history.reviews else None
    st.markdown(f"Current label: **{latest.label}** by {latest.reviewer}" if latest else "Not reviewed yet.")
    if not allowed(Permission.LABEL):
        return
    st.selectbox("Reason (optional)", [NO_REASON, *console_settings().review_reasons], key="image_reason")
    st.text_input("Note (optional)", key="image_note", max_chars=2000)
    buttons = st.container(horizontal=True)
    # No default: neither label is highlighted. wrap: the labels are never cut, whatever the column's width.
    buttons.button("Fake", key="image_fake", wrap=True, on_click=label, args=(history.image.id, Label.FAKE))
    buttons.button("Real", key="image_real", wrap=True, on_click=label, args=(history.image.id, Label.REAL))
    if allowed(Permission.ESCALATE):
        with st.expander("Escalate to a second review"):
            st.text_input("Note for the second reviewer", key="image_escalate_note", max_chars=2000)
            st.button("Send to second review", key="image_escalate", wrap=True, on_click=escalate,
                      args=(history.image.id,))
    if any(row.resolved_at is None for row in history.escalations):
        st.caption("This image waits in the second-review queue.")


def render_summary(history: ImageHistory) -> None:
    """What the newest check of these bytes says now, and the evidence beside the model's score."""
    done = [check for check in history.checks if check.score is not None]
    if not done:
        st.caption("No check of this image has been scored yet.")
        return
    newest = done[0]
    decision = _decision(history, newest)
    st.text(verdict_line(decision.verdict, newest.score, decision.confidence, decision.source, decision.reason))
    summary = provenance_summary(history.image.provenance)
    if summary:
        st.text(f"Provenance: {summary}")
    for line in evidence_lines(None, newest.match):
        st.text(line)


def render_picture(history: ImageHistory) -> None:
    image = history.image
    try:
        data = read_stored(image.storage_key, image_store(console_settings()))
    except FakewatchError:
        st.warning("The stored image file is missing.")
        return
    controls = st.container(horizontal=True, vertical_alignment="bottom")
    zoom = ZOOMS[str(controls.radio("Zoom", list(ZOOMS), horizontal=True, key="image_zoom"))]
    regions = next((check.regions for check in history.checks if check.regions), None)
    shown: bytes = data
    if regions and controls.toggle("Heat map", key="image_heatmap", help="The detector's score per crop, from "
                                   "blue (looks real) to red (looks fake); see the README."):
        shown = heatmap_png(decode_image(data, console_settings().image_limits), regions)
    if zoom is None:
        st.image(data_url(shown), width="stretch")  # large: the whole column
    else:
        with st.container(height=ZOOM_VIEW_PX, border=True):
            st.image(data_url(shown), width=int(image.width * zoom))
        st.caption(f"Zoom {zoom:.0%}: {int(image.width * zoom)} × {int(image.height * zoom)} px; scroll to pan.")
    if regions:
        st.caption(f"Heat map: {len(regions)} crop(s), scores {min(r['score'] for r in regions):.2f} to "
                   f"{max(r['score'] for r in regions):.2f}.")


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
        if image.deleted_at:
            st.warning(f"This image was deleted on {image.deleted_at:%Y-%m-%d %H:%M} UTC; its checks are kept.")
        elif image.media == "video":  # the clip, its timeline and frames: admin/video.py
            render_video(image, history.checks)
        else:
            render_picture(history)
    with details:
        length = f", {image.duration_s:.1f} s" if image.media == "video" and image.duration_s else ""
        st.markdown(f"**{image.format}**, {image.width} × {image.height}{length}, {image.byte_size:,} bytes")
        st.caption(f"SHA-256 {image.sha256} · first seen {image.first_seen:%Y-%m-%d %H:%M} UTC")
        render_summary(history)
        render_labelling(history)
    render_provenance(image.provenance)
    st.subheader(f"Checks ({len(history.checks)})")
    st.dataframe(checks_table(history, deliveries), hide_index=True, width="stretch", column_config=CHECK_COLUMNS)
    st.caption("Where each check came from")
    st.dataframe(check_sources_table(history), hide_index=True, width="stretch", column_config=SOURCE_COLUMNS)
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
    if history.escalations:
        st.subheader(f"Escalations ({len(history.escalations)})")
        st.dataframe(escalations_table(history), hide_index=True, width="stretch")
    render_history(image.sha256)


def render_history(sha256: str) -> None:
    """The image's own audit trail: every label, undo, escalation and deletion of these bytes, newest first."""
    with session_scope() as session:
        events = [event_dict(event) for event in find_events(session, EventFilters(object_type="image",
                                                                                   object_id=sha256))]
    st.subheader(f"History ({len(events)})")
    if not events:
        st.caption("Nothing has been done to this image yet.")
        return
    st.dataframe(dash_missing(pd.DataFrame([{"at": e["at"], "action": e["action"], "by": e["actor_name"],
                                             "role": e["actor_role"], "before": (e["before"] or {}).get("label"),
                                             "after": (e["after"] or {}).get("label")} for e in events])),
                 hide_index=True, width="stretch", key="image_history")


render_image_page()
