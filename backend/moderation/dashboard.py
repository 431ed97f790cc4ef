"""Aggregates for the console's Dashboard: volume per day, flagged rate, verdict mix, score histogram, the review
queue's size and age, and how often moderators agree with each model version. Counted in the database (GROUP
BY), so the page stays fast however many checks there are."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from backend.moderation.reviews import oldest_waiting, queue_size
from backend.storage.schema import Check, ModelVersion, Review, utcnow
from core.enums import FLAGGED_VERDICTS, CheckStatus, Label, Verdict

HISTOGRAM_BINS = 10


@dataclass(frozen=True)
class DayCount:
    day: date
    checks: int
    flagged: int


@dataclass(frozen=True)
class QueueStats:
    size: int
    oldest_at: datetime | None
    age_s: float | None


@dataclass
class Agreement:
    """Model verdicts against moderators' latest labels, for one model version."""

    model_version: str
    # confusion[verdict][label] = images; verdict in real/uncertain/fake, label in real/fake.
    confusion: dict[str, dict[str, int]] = field(
        default_factory=lambda: {verdict.value: {label.value: 0 for label in Label} for verdict in Verdict})

    @property
    def reviewed(self) -> int:
        return sum(sum(row.values()) for row in self.confusion.values())

    @property
    def agreement_rate(self) -> float | None:
        """Share of decided (real or fake) verdicts the moderator confirmed; uncertain ones are left out."""
        decided = sum(self.confusion[verdict][label] for verdict in (Verdict.REAL, Verdict.FAKE) for label in Label)
        agreed = self.confusion[Verdict.REAL][Label.REAL] + self.confusion[Verdict.FAKE][Label.FAKE]
        return agreed / decided if decided else None


@dataclass(frozen=True)
class DashboardData:
    total_checks: int
    done_checks: int
    flagged_rate: float | None
    per_day: list[DayCount]
    verdict_mix: dict[str, int]
    histogram: list[tuple[float, float, int]]
    queue: QueueStats
    agreement: list[Agreement]


def _day(session: Session) -> Any:
    """The UTC calendar day of a check, in this database's dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", Check.created_at))
    return func.date(Check.created_at)


def checks_per_day(session: Session, days: int = 30, now: datetime | None = None) -> list[DayCount]:
    """Checks and flagged checks per UTC day for the last ``days`` days, days without checks included."""
    today = (now or utcnow()).astimezone(UTC).date()
    start = today - timedelta(days=days - 1)
    day = _day(session)
    rows = session.execute(
        select(day, func.count(), func.sum(cast(Check.flagged, Integer)))
        .where(Check.created_at >= datetime.combine(start, datetime.min.time(), UTC))
        .group_by(day)
    )
    counts = {_as_date(raw): (int(total), int(flagged or 0)) for raw, total, flagged in rows}
    return [DayCount(d, *counts.get(d, (0, 0))) for d in (start + timedelta(n) for n in range(days))]


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def verdict_mix(session: Session) -> dict[str, int]:
    rows = session.execute(select(Check.verdict, func.count()).where(Check.status == CheckStatus.DONE)
                           .group_by(Check.verdict))
    counts = {verdict: int(count) for verdict, count in rows if verdict}
    return {verdict.value: counts.get(verdict, 0) for verdict in Verdict}


def flagged_rate(mix: dict[str, int]) -> float | None:
    """Share of finished checks that were flagged (fake or uncertain), from the verdict mix; None before the first
    verdict."""
    done = sum(mix.values())
    return sum(mix[verdict] for verdict in FLAGGED_VERDICTS) / done if done else None


def score_histogram(session: Session, bins: int = HISTOGRAM_BINS) -> list[tuple[float, float, int]]:
    """(low, high, count) for equal-width score bins over [0, 1]; a score of exactly 1 falls in the last bin."""
    # PostgreSQL rounds when casting to an integer; SQLite truncates (and may lack floor()).
    scaled = Check.score * bins
    index = func.floor(scaled) if session.get_bind().dialect.name == "postgresql" else cast(scaled, Integer)
    rows = session.execute(select(index, func.count()).where(Check.score.is_not(None)).group_by(index))
    counts = [0] * bins
    for raw, count in rows:
        counts[min(max(int(raw), 0), bins - 1)] += int(count)
    return [(n / bins, (n + 1) / bins, counts[n]) for n in range(bins)]


def queue_stats(session: Session, now: datetime | None = None) -> QueueStats:
    oldest = oldest_waiting(session)
    age = ((now or utcnow()) - oldest).total_seconds() if oldest else None
    return QueueStats(size=queue_size(session), oldest_at=oldest, age_s=age)


def model_agreement(session: Session) -> list[Agreement]:
    """Per model version, each reviewed image's verdict against the image's latest label.

    Every finished check counts once per (image, model version): the same bytes checked twice by one version
    get the same verdict, so counting both would only weigh popular images twice."""
    latest = (select(Review.image_id, func.max(Review.id).label("review_id")).group_by(Review.image_id)
              .subquery())
    pairs = (
        select(ModelVersion.name, Check.verdict, Review.label, Check.image_id)
        .join(Check, Check.model_version_id == ModelVersion.id)
        .join(latest, latest.c.image_id == Check.image_id)
        .join(Review, Review.id == latest.c.review_id)
        .where(Check.status == CheckStatus.DONE, Check.verdict.is_not(None))
        .distinct()
        .subquery()
    )
    rows = session.execute(
        select(pairs.c.name, pairs.c.verdict, pairs.c.label, func.count())
        .group_by(pairs.c.name, pairs.c.verdict, pairs.c.label))
    by_version: dict[str, Agreement] = {}
    for name, verdict, label, count in rows:
        agreement = by_version.setdefault(name, Agreement(model_version=name))
        agreement.confusion[verdict][label] += int(count)
    return sorted(by_version.values(), key=lambda a: a.model_version)


def dashboard_data(session: Session, days: int = 30, now: datetime | None = None) -> DashboardData:
    total = int(session.scalar(select(func.count()).select_from(Check)) or 0)
    mix = verdict_mix(session)
    return DashboardData(
        total_checks=total,
        done_checks=sum(mix.values()),
        flagged_rate=flagged_rate(mix),
        per_day=checks_per_day(session, days, now),
        verdict_mix=mix,
        histogram=score_histogram(session),
        queue=queue_stats(session, now),
        agreement=model_agreement(session),
    )
