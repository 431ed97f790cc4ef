"""Audit: every state-changing action (who, when, what, on which object, before and after), filtered by actor,
action, object and time, and exported as CSV. For admins and viewers (backend/identity/access.py's READ_AUDIT)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
import streamlit as st

from admin.auth import require_permission
from admin.context import session_scope
from admin.tables import dash_missing
from backend.identity.audit import EventFilters, event_dict, events_csv, find_events
from core.enums import AuditAction, Permission

SHOWN_EVENTS = 500


def read_filters() -> EventFilters:
    with st.sidebar:
        st.subheader("Filters")
        actor = st.text_input("Actor (exact name)", key="audit_actor").strip()
        actions = st.multiselect("Action", [action.value for action in AuditAction], key="audit_actions")
        object_type = st.text_input("Object type (image, batch, api_key, ...)", key="audit_object_type").strip()
        object_id = st.text_input("Object id", key="audit_object_id").strip()
        days = st.date_input("Between", value=[], key="audit_days")
    chosen: list[date] = list(days) if isinstance(days, tuple | list) else [days]
    since = datetime.combine(chosen[0], time.min, UTC) if chosen else None
    until = datetime.combine(chosen[-1], time.min, UTC) + timedelta(days=1) if chosen else None
    return EventFilters(actor=actor or None, actions=tuple(actions), object_type=object_type or None,
                        object_id=object_id or None, since=since, until=until)


def audit_csv(filters: EventFilters) -> str:
    """Every matching event (not only those shown); built when the download is clicked."""
    with session_scope() as session:
        return events_csv(find_events(session, filters, limit=None))


def render_audit() -> None:
    require_permission(Permission.READ_AUDIT)
    st.title("Audit")
    filters = read_filters()
    with session_scope() as session:
        events = [event_dict(event) for event in find_events(session, filters, limit=SHOWN_EVENTS)]
    st.download_button("Download CSV", data=lambda: audit_csv(filters), mime="text/csv", file_name="audit.csv",
                       key="audit_download")
    if not events:
        st.info("No event matches these filters.")
        return
    st.caption(f"{len(events)} event(s), newest first" + (f" (the latest {SHOWN_EVENTS})"
                                                          if len(events) == SHOWN_EVENTS else ""))
    # A missing cell reads as a dash: an action from the command line or the API has no browser address.
    table = dash_missing(pd.DataFrame([{**event, "before": _compact(event["before"]), "after": _compact(event["after"])}
                                       for event in events]))
    st.dataframe(table, hide_index=True, width="stretch", key="audit_table")


def _compact(value: object) -> str:
    return "" if value is None else str(value)


render_audit()
