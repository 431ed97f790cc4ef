"""Dashboard: how much is checked, how much is flagged, what the scores look like, how the review queue is
keeping up, and how often moderators agree with each model version."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from admin.auth import require_user
from admin.context import session_scope
from backend.moderation.dashboard import Agreement, DashboardData, dashboard_data
from core.enums import Verdict


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "empty"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def render_headline(data: DashboardData) -> None:
    total, rate, queue, age = st.columns(4)
    total.metric("Checks", f"{data.total_checks:,}", help=f"{data.done_checks:,} with a verdict")
    rate.metric("Flagged rate", f"{data.flagged_rate:.1%}" if data.flagged_rate is not None else "–")
    queue.metric("Review queue", f"{data.queue.size:,}")
    age.metric("Oldest waiting", format_age(data.queue.age_s))


def render_volume(data: DashboardData) -> None:
    per_day = pd.DataFrame([{"day": d.day.isoformat(), "checks": d.checks, "flagged": d.flagged}
                            for d in data.per_day])
    st.subheader("Checks per day (UTC)")
    st.bar_chart(per_day, x="day", y=["checks", "flagged"], stack=False, height=260)


def render_distributions(data: DashboardData) -> None:
    mix_column, histogram_column = st.columns(2)
    with mix_column:
        st.subheader("Verdict mix")
        mix = pd.DataFrame({"verdict": list(data.verdict_mix), "checks": list(data.verdict_mix.values())})
        st.bar_chart(mix, x="verdict", y="checks", height=260)
    with histogram_column:
        st.subheader("Score histogram")
        bins = pd.DataFrame([{"score": f"{low:.1f}–{high:.1f}", "checks": count}
                             for low, high, count in data.histogram])
        st.bar_chart(bins, x="score", y="checks", height=260)


def confusion_chart(agreement: Agreement) -> alt.Chart:
    cells = pd.DataFrame([{"model verdict": verdict, "moderator label": label, "images": count}
                          for verdict, row in agreement.confusion.items() for label, count in row.items()])
    base = alt.Chart(cells).encode(x=alt.X("moderator label:N"),
                                   y=alt.Y("model verdict:N", sort=[verdict.value for verdict in reversed(Verdict)]))
    heat = base.mark_rect().encode(color=alt.Color("images:Q", scale=alt.Scale(scheme="blues")))
    text = base.mark_text(fontSize=16).encode(text="images:Q")
    chart: alt.Chart = (heat + text).properties(height=200, title=agreement.model_version)
    return chart


def render_agreement(data: DashboardData) -> None:
    st.subheader("Model verdicts against moderators' labels")
    if not data.agreement:
        st.info("No reviewed image yet: label images in the review queue to see how each model version does.")
        return
    summary = pd.DataFrame([{"model version": a.model_version, "reviewed images": a.reviewed,
                             "agreement (real/fake verdicts)": a.agreement_rate} for a in data.agreement])
    st.dataframe(summary, hide_index=True, width="stretch",
                 column_config={"agreement (real/fake verdicts)": st.column_config.NumberColumn(format="percent")})
    for start in range(0, len(data.agreement), 3):
        for column, agreement in zip(st.columns(3), data.agreement[start : start + 3], strict=False):
            column.altair_chart(confusion_chart(agreement), width="stretch")


def render_dashboard() -> None:
    require_user()
    st.title("Dashboard")
    with session_scope() as session:
        data = dashboard_data(session)
    if data.total_checks == 0:
        st.info("No checks yet. Submit images through the API, the extension or the Batches page.")
    render_headline(data)
    render_volume(data)
    render_distributions(data)
    render_agreement(data)


render_dashboard()
