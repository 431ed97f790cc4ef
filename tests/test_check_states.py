"""How a check's state moves: claiming is exclusive, a redelivered task is harmless, the sweeper re-queues and
finally gives up. Runs the worker's scoring function in-process against a real embedded database and model."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError

from backend.batches.lifecycle import create_batch
from backend.batches.lists import Entry, validate_entries
from backend.checks.service import claim_checks, lost_repeatedly, store_image, submit_image, sweep_stuck_checks
from backend.moderation.reviews import label_image
from backend.settings import Settings
from backend.storage.db import get_engine, session_scope
from backend.storage.schema import Base, Batch, Check, Review, TrainingRun, utcnow
from core.enums import BatchStatus, CheckStatus, Label, RunStatus, Source
from testbed.images import distinct_photos
from tests.actors import as_user
from worker.scoring import score_checks

scoring = pytest.mark.usefixtures("active_model")  # the tiny model, registered and active


def submit(settings: Settings, count: int) -> list[str]:
    with session_scope(settings) as session:
        return [submit_image(session, data, settings).check.id for data in distinct_photos(count, size=96)]


@scoring
def test_a_check_is_claimed_once(database: Settings) -> None:
    ids = submit(database, 3)
    with session_scope(database) as session:
        assert len(claim_checks(session, ids, stale_after_s=60)) == 3
    with session_scope(database) as session:
        assert claim_checks(session, ids, stale_after_s=60) == [], "running and fresh: nobody else may take it"


@scoring
def test_scoring_twice_is_harmless(database: Settings) -> None:
    ids = submit(database, 4)
    assert score_checks(ids, database) == {"claimed": 4, "done": 4}
    with session_scope(database) as session:
        before = {check.id: (check.score, check.finished_at) for check in session.query(Check).filter(Check.id.in_(ids))}
    assert score_checks(ids, database) == {"claimed": 0}, "a redelivered message for finished checks does nothing"
    with session_scope(database) as session:
        after = {check.id: (check.score, check.finished_at) for check in session.query(Check).filter(Check.id.in_(ids))}
    assert before == after


@scoring
def test_same_bytes_in_one_chunk_are_scored_once_and_cached_later(database: Settings) -> None:
    data = distinct_photos(1, size=96)[0]
    with session_scope(database) as session:
        first = submit_image(session, data, database).check.id
        second = submit_image(session, data, database).check.id
    score_checks([first, second], database)
    with session_scope(database) as session:
        a, b = session.get(Check, first), session.get(Check, second)
        assert a is not None and b is not None and a.score == b.score and a.status == b.status == "done"
        third = submit_image(session, data, database)
        assert not third.needs_scoring and third.check.cached and third.check.score == a.score


@scoring
def test_sweeper_requeues_then_gives_up(database: Settings) -> None:
    (check_id,) = submit(database, 1)
    long_ago = utcnow() - timedelta(hours=1)
    for attempt in range(1, 4):
        with session_scope(database) as session:
            claim_checks(session, [check_id], stale_after_s=60)
            # Its worker died: nobody renewed the lease.
            session.execute(update(Check).where(Check.id == check_id).values(lease_expires_at=long_ago))
        with session_scope(database) as session:
            requeued = sweep_stuck_checks(session, database)
        with session_scope(database) as session:
            check = session.get(Check, check_id)
            assert check is not None and check.attempts == attempt
            if attempt < 3:
                assert requeued == [check_id] and check.status == "queued"
            else:
                assert requeued == [] and check.status == "failed" and check.error_code == "worker_lost"
                assert "3 times" in (check.error_message or "")


def _lose_worker(settings: Settings, check_ids: list[str]) -> list[str]:
    """Claim the checks as one chunk, let their worker die (nobody renews the lease), and sweep."""
    with session_scope(settings) as session:
        claim_checks(session, check_ids, stale_after_s=60)
        session.execute(update(Check).where(Check.id.in_(check_ids))
                        .values(lease_expires_at=utcnow() - timedelta(hours=1)))
    with session_scope(settings) as session:
        return sweep_stuck_checks(session, settings)


@scoring
def test_after_a_second_loss_a_chunks_checks_are_tried_one_at_a_time(database: Settings) -> None:
    """Killed twice while holding a chunk, its checks are sent one per message (whether the sweeper re-queues them
    or the broker delivers the chunk again), so only a check that itself kills workers fails as worker_lost."""
    ids = submit(database, 4)
    assert sorted(_lose_worker(database, ids)) == sorted(ids)
    with session_scope(database) as session:
        assert lost_repeatedly(session, ids) == set(), "lost once: still one chunk"
    assert sorted(_lose_worker(database, ids)) == sorted(ids)
    with session_scope(database) as session:
        assert lost_repeatedly(session, ids) == set(ids), "lost twice: each alone"
    # The chunk's message delivered again as a whole: the worker sends each check back alone, scoring none.
    assert score_checks(ids, database) == {"claimed": 4, "split": 4}
    with session_scope(database) as session:
        rows = [session.get(Check, check_id) for check_id in ids]
        assert all(row is not None and row.status == "queued" and row.attempts == 2 for row in rows)
    # Alone, a healthy check is scored; one that kills its worker a third time fails by itself.
    assert score_checks(ids[:1], database)["done"] == 1
    assert _lose_worker(database, ids[1:2]) == []
    with session_scope(database) as session:
        healthy, killer = session.get(Check, ids[0]), session.get(Check, ids[1])
        assert healthy is not None and healthy.status == "done"
        assert killer is not None and killer.status == "failed" and killer.error_code == "worker_lost"


@scoring
def test_a_lost_message_is_sent_again(database: Settings) -> None:
    (check_id,) = submit(database, 1)
    with session_scope(database) as session:
        session.execute(update(Check).where(Check.id == check_id).values(queued_at=utcnow() - timedelta(hours=1)))
    with session_scope(database) as session:
        assert sweep_stuck_checks(session, database) == [check_id]
    with session_scope(database) as session:
        check = session.get(Check, check_id)
        assert check is not None and check.status == "queued" and check.attempts == 0


@pytest.mark.parametrize(("table", "column", "outsider"), [
    ("checks", "status", "lost"), ("checks", "source", "email"), ("checks", "verdict", "maybe"),
    ("batches", "status", "paused"), ("training_runs", "status", "stuck"), ("reviews", "label", "unsure"),
])
def test_the_database_refuses_words_outside_each_enum(any_database: Settings, table: str, column: str,
                                                      outsider: str) -> None:
    """Every enum column has a CHECK constraint (migration 0003), on SQLite and PostgreSQL alike; the ORM reads
    the members back."""

    with session_scope(any_database) as session:
        created = create_batch(session, validate_entries([Entry(1, "https://example.org/a.jpg")], 10))
        image = store_image(session, distinct_photos(1, size=96)[0], any_database)
        label_image(session, image.id, "fake", as_user("mod"))
        session.add(TrainingRun(params={}, progress={}))
    with session_scope(any_database) as session:
        check = session.get(Check, created.check_ids[0])
        assert check is not None and check.status is CheckStatus.QUEUED and check.source is Source.BATCH
        assert session.get(Batch, created.batch.id).status is BatchStatus.QUEUED  # type: ignore[union-attr]
        assert session.query(Review).one().label is Label.FAKE
        assert session.query(TrainingRun).one().status is RunStatus.QUEUED
    with pytest.raises(IntegrityError), session_scope(any_database) as session:
        session.execute(text(f"UPDATE {table} SET {column} = :outsider"), {"outsider": outsider})


@pytest.mark.filterwarnings("ignore:.*expression-based index:UserWarning", "ignore:.*expression-based index")
def test_the_migrations_build_the_schema_the_models_declare(any_database: Settings) -> None:
    """Alembic finds nothing to add or change: every column, type and index of backend/storage/schema.py has its revision.
    (The one-active-run expression index is left out: PostgreSQL reflects it in another spelling, SQLite not at
    all; test_retrain.py's race test shows it at work.)"""

    def compared(_object: object, name: str | None, *_rest: object) -> bool:
        return name != "uq_training_runs_one_active"

    with get_engine(any_database.database).connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": compared})
        assert compare_metadata(context, Base.metadata) == []
