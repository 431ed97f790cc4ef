"""How a check's state moves: claiming is exclusive, a redelivered task is harmless, the sweeper re-queues and
finally gives up. Runs the worker's scoring function in-process against a real embedded database and model."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from backend.checks import claim_checks, submit_image, sweep_stuck_checks
from backend.db import session_scope
from backend.schema import Check, utcnow
from tests.fixtures_images import distinct_photos


@pytest.fixture
def database(settings_env: Path, tiny_model_path: Path) -> Path:
    from backend.migrate import upgrade_database
    from backend.model_versions import register_model

    upgrade_database()
    with session_scope() as session:
        register_model(session, tiny_model_path, activate=True)
    return settings_env


def submit(count: int) -> list[str]:
    with session_scope() as session:
        return [submit_image(session, data).check.id for data in distinct_photos(count, size=96)]


def test_a_check_is_claimed_once(database: Path) -> None:
    ids = submit(3)
    with session_scope() as session:
        assert len(claim_checks(session, ids, stale_after_s=60)) == 3
    with session_scope() as session:
        assert claim_checks(session, ids, stale_after_s=60) == [], "running and fresh: nobody else may take it"


def test_scoring_twice_is_harmless(database: Path) -> None:
    from worker.scoring import score_checks

    ids = submit(4)
    assert score_checks(ids) == {"claimed": 4, "done": 4}
    with session_scope() as session:
        before = {check.id: (check.score, check.finished_at) for check in session.query(Check).filter(Check.id.in_(ids))}
    assert score_checks(ids) == {"claimed": 0}, "a redelivered message for finished checks does nothing"
    with session_scope() as session:
        after = {check.id: (check.score, check.finished_at) for check in session.query(Check).filter(Check.id.in_(ids))}
    assert before == after


def test_same_bytes_in_one_chunk_are_scored_once_and_cached_later(database: Path) -> None:
    from worker.scoring import score_checks

    data = distinct_photos(1, size=96)[0]
    with session_scope() as session:
        first = submit_image(session, data).check.id
        second = submit_image(session, data).check.id
    score_checks([first, second])
    with session_scope() as session:
        a, b = session.get(Check, first), session.get(Check, second)
        assert a is not None and b is not None and a.score == b.score and a.status == b.status == "done"
        third = submit_image(session, data)
        assert not third.needs_scoring and third.check.cached and third.check.score == a.score


def test_sweeper_requeues_then_gives_up(database: Path) -> None:
    from backend.settings import get_settings

    (check_id,) = submit(1)
    long_ago = utcnow() - timedelta(hours=1)
    for attempt in range(1, 4):
        with session_scope() as session:
            claim_checks(session, [check_id], stale_after_s=60)
            session.execute(update(Check).where(Check.id == check_id).values(started_at=long_ago))
        with session_scope() as session:
            requeued = sweep_stuck_checks(session, get_settings())
        with session_scope() as session:
            check = session.get(Check, check_id)
            assert check is not None and check.attempts == attempt
            if attempt < 3:
                assert requeued == [check_id] and check.status == "queued"
            else:
                assert requeued == [] and check.status == "failed" and check.error_code == "worker_lost"
                assert "3 times" in (check.error_message or "")


def test_a_lost_message_is_sent_again(database: Path) -> None:
    from backend.settings import get_settings

    (check_id,) = submit(1)
    with session_scope() as session:
        session.execute(update(Check).where(Check.id == check_id).values(queued_at=utcnow() - timedelta(hours=1)))
    with session_scope() as session:
        assert sweep_stuck_checks(session, get_settings()) == [check_id]
    with session_scope() as session:
        check = session.get(Check, check_id)
        assert check is not None and check.status == "queued" and check.attempts == 0
