"""A list page costs the same number of SQL statements whatever its length: the service that answers it loads what
the page shows in grouped queries, and the shapes (backend/shapes.py) build the JSON from what was loaded. Counted
on the engine (``before_cursor_execute``) for pages of 24 and of 100 items of checks, the review queue, batches and
training runs, over the API and through the services the console calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, select

from backend.api import create_app
from backend.batches.lifecycle import create_batch
from backend.batches.lists import ParsedList
from backend.batches.progress import list_batches
from backend.checks.served import served_checks
from backend.checks.service import submit_image
from backend.identity.keys import create_key
from backend.moderation.reviews import label_image, review_queue
from backend.settings import Settings
from backend.shapes import BatchOut, CheckOut, RunOut
from backend.storage.db import get_engine, session_scope
from backend.storage.migrate import upgrade_database
from backend.storage.schema import CallbackDelivery, Check, ModelVersion, TrainingRun
from backend.training.runs import list_runs
from backend.training.versions import register_model
from core.enums import CheckStatus, DeliveryStatus, Label, Role, RunStatus, Verdict
from core.model_metadata import SHIPPED_MODEL
from testbed.images import distinct_photos
from testbed.stack import isolated_settings
from tests.actors import OPERATOR, as_user

SMALL, LARGE = 24, 100
# More waiting images than a page, as the queue folds the near-copies among them into one card.
EXTRA = 12


@dataclass
class Counter:
    statements: int = 0


@contextmanager
def counted(settings: Settings) -> Iterator[Counter]:
    """Counts the statements sent to the database while the block runs."""
    engine = get_engine(settings.database)
    counter = Counter()

    def count(*_args: Any) -> None:
        counter.statements += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", count)


def statements(settings: Settings, read: Callable[[int], object]) -> dict[int, int]:
    """The statements ``read`` sends for a page of SMALL and of LARGE items."""
    found = {}
    for size in (SMALL, LARGE):
        with counted(settings) as counter:
            read(size)
        found[size] = counter.statements
    return found


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A database of LARGE + EXTRA flagged checks of distinct images, each with a callback (half of them with a
    delivery already owed), LARGE // 4 more checks whose images are labelled, and LARGE batches with callbacks (half with a
    delivery). Seeded once: the tests only read it."""
    settings = isolated_settings(data_dir=tmp_path_factory.mktemp("counts") / "var")
    upgrade_database(settings.database)
    with session_scope(settings) as session:
        version = register_model(session, SHIPPED_MODEL, activate=True)
        for number, data in enumerate(distinct_photos(LARGE + LARGE // 4 + EXTRA, size=48)):
            check = submit_image(session, data, settings, callback_url="https://receiver.test/hook").check
            check.status, check.score, check.flagged, check.verdict = CheckStatus.DONE, 0.9, True, Verdict.FAKE
            check.model_version_id = version.id
            session.flush()
            if number % 2:
                session.add(CallbackDelivery(check_id=check.id, url=check.callback_url or "",
                                             status=DeliveryStatus.PENDING))
        for number in range(LARGE):
            batch = create_batch(session, ParsedList(urls=[f"https://images.test/{number}.jpg"]),
                                 name=f"b{number}", callback_url="https://receiver.test/hook").batch
            if number % 2:
                session.add(CallbackDelivery(batch_id=batch.id, url=batch.callback_url or "",
                                             status=DeliveryStatus.DELIVERED))
        for number in range(LARGE):
            candidate = ModelVersion(name=f"candidate-{number}", file=f"candidate-{number}.keras", sha256="0" * 64)
            session.add(TrainingRun(status=RunStatus.DONE, requested_by="tests", model_version=candidate))
    with session_scope(settings) as session:
        # The newest images are labelled (with their near-copies): their checks show it, and they leave the queue.
        checks = list(session.scalars(select(Check).where(Check.batch_id.is_(None)).order_by(Check.created_at)))
        for check in checks[LARGE + EXTRA:]:
            assert check.image_id is not None
            label_image(session, check.image_id, Label.FAKE, as_user())
    yield settings
    get_engine(settings.database).dispose()


@pytest.fixture(scope="module")
def api(seeded: Settings) -> tuple[FlaskClient, dict[str, str]]:
    with session_scope(seeded) as session:
        _, key = create_key(session, "counts", Role.ADMIN, actor=OPERATOR)
    return create_app(seeded, test_config={"TESTING": True}).test_client(), {"Authorization": f"Bearer {key}"}


def test_a_page_of_checks_costs_the_same_statements_at_24_and_100(seeded: Settings) -> None:
    def read(size: int) -> list[dict[str, Any]]:
        with session_scope(seeded) as session:
            checks = list(session.scalars(select(Check).where(Check.batch_id.is_(None))
                                          .order_by(Check.created_at.desc()).limit(size)))
            dumped: list[dict[str, Any]] = CheckOut(many=True).dump(served_checks(session, checks))
        assert len(dumped) == size
        return dumped

    # The page, the latest reviews of its images, their callback deliveries (301 statements for 100 before).
    assert statements(seeded, read) == {SMALL: 3, LARGE: 3}
    shown = read(LARGE)
    assert sum(check["review"] is not None for check in shown) >= LARGE // 4
    assert {check["callback"]["status"] for check in shown} == {"pending"}
    assert sum(check["callback"]["attempts"] == 0 and check["callback"]["next_attempt_at"] is not None
               for check in shown) == LARGE // 2


def test_the_review_queue_page_costs_the_same_statements_at_24_and_100(seeded: Settings,
                                                                       api: tuple[FlaskClient, dict[str, str]]) -> None:
    client, auth_headers = api

    def over_http(size: int) -> None:
        response = client.get(f"/api/v1/queue?per_page={size}", headers=auth_headers)
        assert response.status_code == 200 and len(response.get_json()["items"]) == size

    def in_the_console(size: int) -> None:
        with session_scope(seeded) as session:
            assert len(review_queue(session, limit=size, copies=None)) == size

    http = statements(seeded, over_http)
    assert http[SMALL] == http[LARGE], http
    console = statements(seeded, in_the_console)
    assert console[SMALL] == console[LARGE], console


def test_the_training_runs_cost_the_same_statements_at_24_and_100(seeded: Settings) -> None:
    def in_the_console(size: int) -> None:
        with session_scope(seeded) as session:
            runs = RunOut(many=True).dump(list_runs(session, limit=size))
            assert len(runs) == size and all(run["candidate"]["name"].startswith("candidate-") for run in runs)

    # The page and its candidates (25 and 101 before).
    assert statements(seeded, in_the_console) == {SMALL: 2, LARGE: 2}


def test_a_page_of_batches_costs_the_same_statements_at_24_and_100(seeded: Settings,
                                                                   api: tuple[FlaskClient, dict[str, str]]) -> None:
    client, auth_headers = api

    def over_http(size: int) -> None:
        response = client.get(f"/api/v1/batches?per_page={size}", headers=auth_headers)
        batches = response.get_json()["batches"]
        assert response.status_code == 200 and len(batches) == size
        assert {batch["callback"]["status"] for batch in batches} == {"pending", "delivered"}

    def in_the_console(size: int) -> None:
        with session_scope(seeded) as session:
            summaries, _ = list_batches(session, per_page=size)
            assert len(BatchOut(many=True).dump(summaries)) == size

    http = statements(seeded, over_http)
    assert http[SMALL] == http[LARGE], http
    console = statements(seeded, in_the_console)
    assert console[SMALL] == console[LARGE], console
