"""What a check shows when it is read: the check with everything its answer needs beside it (the latest review of its
bytes, the decision that review leads to, its callback delivery), loaded for a whole page in a fixed number of
queries. backend/shapes.py's CheckOut dumps a ServedCheck and queries nothing itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.orm import Session, aliased

from backend.checks.verdicts import decision_when_read
from backend.storage.schema import CallbackDelivery, Check, Review
from core.policy import Decision


@dataclass(frozen=True)
class ServedCheck:
    check: Check
    decision: Decision
    review: Review | None
    delivery: CallbackDelivery | None


@cache
def _latest_reviews_query() -> Select[Review]:
    """Built once, the ids bound at each call: building this window query (a subquery, an alias and its columns)
    cost more CPU than running it, on every read of a check."""
    newest_first = (Review.created_at.desc(), Review.id.desc())
    ranked = (select(Review, func.row_number().over(partition_by=Review.image_id, order_by=newest_first).label("rank"))
              .where(Review.image_id.in_(bindparam("image_ids", expanding=True))).subquery())
    latest = aliased(Review, ranked)
    return select(latest).where(ranked.c.rank == 1)


def latest_reviews(session: Session, image_ids: Sequence[int]) -> dict[int, Review]:
    """The newest review of each of these images (the label every check of its bytes shows), in one query."""
    if not image_ids:
        return {}
    rows = session.scalars(_latest_reviews_query(), {"image_ids": sorted(set(image_ids))})
    return {review.image_id: review for review in rows}


def deliveries_of_checks(session: Session, check_ids: Sequence[str]) -> dict[str, CallbackDelivery]:
    """The callback deliveries owed for these checks, by check id, in one query."""
    if not check_ids:
        return {}
    rows = session.scalars(select(CallbackDelivery).where(CallbackDelivery.check_id.in_(list(check_ids))))
    return {row.check_id: row for row in rows if row.check_id is not None}


def served_checks(session: Session, checks: Sequence[Check]) -> list[ServedCheck]:
    """These checks as read now, in their order: two queries for the page, whatever its length (a check's image
    and model version are loaded with it, see backend.storage.schema)."""
    reviews = latest_reviews(session, [check.image_id for check in checks if check.image_id is not None])
    deliveries = deliveries_of_checks(session, [check.id for check in checks if check.callback_url])
    served = []
    for check in checks:
        review = reviews.get(check.image_id) if check.image_id is not None else None
        served.append(ServedCheck(check, decision_when_read(check, review), review, deliveries.get(check.id)))
    return served


def served_check(session: Session, check: Check) -> ServedCheck:
    return served_checks(session, [check])[0]
