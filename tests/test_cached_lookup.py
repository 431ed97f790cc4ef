"""A re-check of bytes the active model already scored: it reads the model's own scoring through the index that
holds ``cached`` (migration 0013), however many cached answers came before, and it writes its check once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from backend.checks.service import _cached_scores_query, find_cached_scores, record_score, submit_image
from backend.settings import Settings
from backend.storage.db import get_engine, session_scope
from backend.storage.schema import Check
from backend.training.versions import register_model
from core.enums import CheckStatus
from core.model_metadata import SHIPPED_MODEL
from testbed.images import distinct_photos


def _scored_then_rechecked(settings: Settings, rechecks: int) -> tuple[int, int, list[float | None]]:
    """One upload scored by the model (0.25), then ``rechecks`` uploads of the same bytes; returns the image id,
    the version id and the re-checks' scores."""
    data = distinct_photos(1, size=120)[0]
    with session_scope(settings) as session:
        version = register_model(session, SHIPPED_MODEL, activate=True)
        first = submit_image(session, data, settings).check
        first.status = CheckStatus.RUNNING
        record_score(first, version, 0.25)
        session.commit()
        scores = []
        for _ in range(rechecks):
            again = submit_image(session, data, settings)
            assert not again.needs_scoring and again.check.cached
            scores.append(again.check.score)
        session.commit()
        assert first.image_id is not None
        return first.image_id, version.id, scores


def test_a_re_check_finds_the_models_own_score_among_cached_answers(any_database: Settings) -> None:
    image_id, version_id, scores = _scored_then_rechecked(any_database, 4)
    assert scores == [0.25] * 4
    with session_scope(any_database) as session:
        found = find_cached_scores(session, [image_id], version_id)
        assert list(found) == [image_id] and found[image_id].score == 0.25
        assert find_cached_scores(session, [image_id], version_id + 1) == {}


def test_the_lookup_seeks_past_cached_answers_on_its_index(database: Settings) -> None:
    image_id, version_id, _ = _scored_then_rechecked(database, 2)
    query = _cached_scores_query().params(image_ids=[image_id], model_version_id=version_id)
    engine = get_engine(database.database)
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as connection:
        plan = " ".join(str(row[-1]) for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
    assert "ix_checks_image_model_cached (image_id=? AND model_version_id=? AND cached=?)" in plan, plan


def test_a_cached_re_check_is_one_insert_of_the_finished_row(database: Settings) -> None:
    image_id, _, _ = _scored_then_rechecked(database, 0)
    data = distinct_photos(1, size=120)[0]
    writes: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            writes.append(statement.split("(")[0].split(" SET ")[0].strip())

    engine = get_engine(database.database)
    event.listen(engine, "before_cursor_execute", note)
    try:
        with session_scope(database) as session:
            check = submit_image(session, data, database).check
            session.commit()
            check_id = check.id
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert writes == ["INSERT INTO checks"], writes
    with session_scope(database) as session:
        row = session.get(Check, check_id)
        assert row is not None and row.image_id == image_id
        assert row.status == CheckStatus.DONE and row.cached and row.score == 0.25
        assert row.created_at is not None and row.finished_at is not None and row.created_at <= row.finished_at
