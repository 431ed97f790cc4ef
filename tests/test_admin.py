"""The admin console: its services (moderators, reviews, dashboard aggregates) and its pages driven with
streamlit.testing.v1.AppTest against a real SQLite database seeded through the services."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from admin.cli import streamlit_command, users
from admin.context import SETTINGS_KEY
from admin.heatmap import heatmap_overlay, region_means
from backend.checks.served import served_check
from backend.checks.service import claim_checks, get_check, record_score, submit_image
from backend.delivery.retention import delete_image
from backend.identity.access import Actor
from backend.identity.sessions import console_session_user, end_console_session, start_console_session
from backend.identity.users import authenticate, create_user, first_run_lines, hash_password, verify_password
from backend.moderation.dashboard import dashboard_data
from backend.moderation.reviews import QueueFilters, label_image, queue_size, review_queue, undo_last_decision
from backend.settings import Settings
from backend.shapes import CheckOut
from backend.storage.db import session_scope
from backend.storage.schema import Batch, CallbackDelivery, Check, ConsoleSession, ModelVersion, Review, User
from backend.storage.store import read_stored
from backend.training.versions import register_model
from core.enums import AuditAction, Role, Source, Verdict
from core.errors import FakewatchError
from testbed.images import LocalServer, distinct_photos
from testbed.provenance_files import fixture as provenance_fixture
from testbed.stack import Stack
from tests.actors import OPERATOR, as_user

APP = Path(__file__).resolve().parent.parent / "admin" / "app.py"
MODERATOR, PASSWORD = "mona", "correct horse battery"
APP_TIMEOUT_S = 60


# --- seeding through the services -----------------------------------------------------------------------------


def register_test_model(settings: Settings, name: str = "test-model-v1", activate: bool = True) -> ModelVersion:
    """A model version with metadata only: the console never loads the model, it reads what workers recorded."""
    folder = settings.models_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.keras"
    path.write_bytes(f"placeholder weights for {name}".encode())
    history = {"loss": [0.69, 0.41, 0.30], "val_loss": [0.66, 0.45, 0.38],
               "accuracy": [0.55, 0.81, 0.88], "val_accuracy": [0.58, 0.77, 0.84]}
    metrics = {"valid": {"accuracy": 0.84, "balanced_accuracy": 0.83, "roc_auc": 0.91, "tpr_at_5pct_fpr": 0.6,
                         "fpr_at_threshold": 0.05, "ece": 0.04}}
    path.with_suffix(".json").write_text(json.dumps({"name": name, "architecture": "default", "threshold": 0.5,
                                                     "band": 0.1, "metrics": metrics, "history": history}))
    with session_scope(settings) as session:
        return register_model(session, path, activate=activate)


def scored_check(settings: Settings, data: bytes, score: float, *, source: Source = Source.UPLOAD,
                 page_url: str | None = None, created_at: datetime | None = None) -> str:
    """Submit bytes and record the worker's score for them, as the scoring worker would."""
    with session_scope(settings) as session:
        submission = submit_image(session, data, settings, source=source, page_url=page_url)
        if created_at is not None:
            submission.check.created_at = created_at
        check_id = submission.check.id
        needs_scoring = submission.needs_scoring
    if needs_scoring:
        with session_scope(settings) as session:
            [check] = claim_checks(session, [check_id], stale_after_s=60)
            assert check.image is not None
            version = session.scalars(select(ModelVersion).where(ModelVersion.active.is_(True))).one()
            record_score(check, version, score)
    return check_id


@dataclass
class Seeded:
    flagged: list[str]  # check ids, oldest first: scores 0.7, 0.95, 0.8 (fake, fake, uncertain at t=0.5 b=0.1)
    real: str


def seed_queue(settings: Settings) -> Seeded:
    register_test_model(settings)
    photos = distinct_photos(4, size=96)
    start = datetime.now(UTC) - timedelta(hours=3)
    scores = [0.7, 0.95, 0.55]
    flagged = [scored_check(settings, photo, score, page_url=f"https://example.org/post/{n}",
                            created_at=start + timedelta(minutes=n))
               for n, (photo, score) in enumerate(zip(photos, scores, strict=False))]
    real = scored_check(settings, photos[3], 0.1, source=Source.EXTENSION, created_at=start + timedelta(minutes=5))
    return Seeded(flagged=flagged, real=real)


def image_id_of(settings: Settings, check_id: str) -> int:
    with session_scope(settings) as session:
        image_id = get_check(session, check_id).image_id
        assert image_id is not None
        return image_id


def reviews(settings: Settings) -> list[Review]:
    with session_scope(settings) as session:
        return list(session.scalars(select(Review).order_by(Review.id)))


def review_field(settings: Settings, check_id: str) -> dict[str, str] | None:
    with session_scope(settings) as session:
        review: dict[str, str] | None = CheckOut().dump(served_check(session, get_check(session, check_id)))["review"]
        return review


def add_moderator(settings: Settings, role: Role = Role.MODERATOR) -> Settings:
    with session_scope(settings) as session:
        create_user(session, MODERATOR, PASSWORD, role, actor=OPERATOR)
    return settings


@pytest.fixture
def console_db(database: Settings) -> Settings:
    """A fresh SQLite database (the embedded default) with one moderator: what the console tests run on."""
    return add_moderator(database)


@pytest.fixture
def both_dialects(any_database: Settings) -> Settings:
    """The services' SQL (grouping by day, histogram bins, the queue) on both dialects, with one moderator."""
    return add_moderator(any_database)


# --- AppTest helpers ---------------------------------------------------------------------------------------------


def new_app(settings: Settings) -> AppTest:
    """The console, handed these settings the way its start-up takes them (admin/context.py)."""
    at = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_S)
    at.session_state[SETTINGS_KEY] = settings
    return at


def logged_in(settings: Settings, page: str | None = None) -> AppTest:
    at = new_app(settings).run()
    at.text_input(key="login_name").input(MODERATOR)
    at.text_input(key="login_password").input(PASSWORD)
    press(at, "Log in")
    assert not at.exception, at.exception
    if page:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    return at


def press(at: AppTest, label: str) -> AppTest:
    """Click the button (or form submit button) with this label and run the script again."""
    [button] = [button for button in at.button if button.label == label]
    return button.click().run()


def texts(at: AppTest) -> str:
    kinds = ("markdown", "title", "header", "subheader", "text", "caption", "info", "success", "error", "warning")
    parts = [element.value for kind in kinds for element in getattr(at, kind)]
    return "\n".join(str(part) for part in parts)


# --- moderators ------------------------------------------------------------------------------------------------


def test_passwords_are_salted_scrypt_hashes(console_db: Settings) -> None:
    first, second = hash_password("same password"), hash_password("same password")
    assert first != second and first.startswith("scrypt:16384:8:1$") and "same password" not in first
    assert verify_password("same password", first) and not verify_password("same passworD", first)
    assert not verify_password("anything", "md5$garbage")
    with session_scope(console_db) as session:
        stored = session.scalars(select(User).where(User.name == MODERATOR)).one().password_hash
        assert PASSWORD not in stored
        assert authenticate(session, MODERATOR, PASSWORD).name == MODERATOR
        for name, password in ((MODERATOR, "wrong password"), ("nobody", PASSWORD)):
            with pytest.raises(FakewatchError) as refused:
                authenticate(session, name, password)
            assert refused.value.code == "unauthorized" and refused.value.message == "Wrong name or password."


def test_first_run_creates_admin_once(database: Settings) -> None:
    settings = database.model_copy(update={"admin_password": "from-settings-123"})
    assert first_run_lines(settings) == ["Admin password: from-settings-123 (user admin)"]
    assert first_run_lines(settings) == []
    with session_scope(database) as session:
        assert authenticate(session, "admin", "from-settings-123").name == "admin"


def test_first_run_password_is_random_without_a_setting(database: Settings) -> None:
    [line] = first_run_lines(database)
    password = line.removeprefix("Admin password: ").removesuffix(" (user admin)")
    assert len(password) >= 12 and password != line
    with session_scope(database) as session:
        authenticate(session, "admin", password)


def test_users_cli_creates_and_lists_moderators(console_db: Settings) -> None:
    runner = CliRunner()
    created = runner.invoke(users, ["create", "omar", "--password-stdin"], input="a long password\n", obj=console_db)
    assert created.exit_code == 0, created.output
    assert "Created moderator omar." in created.output
    too_short = runner.invoke(users, ["create", "olga", "--password-stdin"], input="short\n", obj=console_db)
    assert too_short.exit_code == 1 and "at least 8 characters" in too_short.output
    duplicate = runner.invoke(users, ["create", "omar", "--password-stdin"], input="another password\n",
                              obj=console_db)
    assert duplicate.exit_code == 1 and "already a moderator named 'omar'" in duplicate.output
    listed = runner.invoke(users, ["list"], obj=console_db)
    assert [line.split("\t")[0] for line in listed.output.splitlines()] == [MODERATOR, "omar"]


def test_admin_command_runs_streamlit_headless_with_xsrf_protection() -> None:
    command = streamlit_command("127.0.0.1", 8599)
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4].endswith("admin/server.py")
    assert options["--server.enableXsrfProtection"] == "true" and options["--server.headless"] == "true"
    assert options["--server.port"] == "8599" and options["--browser.gatherUsageStats"] == "false"


# --- review services ----------------------------------------------------------------------------------------------


def test_queue_holds_flagged_unreviewed_images_with_filters_and_order(both_dialects: Settings) -> None:
    seeded = seed_queue(both_dialects)
    # The same bytes again: a second (cached) check of the first image, which must not make a second item.
    with session_scope(both_dialects) as session:
        first = get_check(session, seeded.flagged[0])
        assert first.image is not None
        again = submit_image(session, read_stored(first.image.storage_key, both_dialects.images_dir), both_dialects)
        assert again.check.cached and again.check.flagged
    with session_scope(both_dialects) as session:
        oldest = review_queue(session)
        assert [item.check_id for item in oldest] == seeded.flagged
        assert [item.verdict for item in oldest] == ["fake", "fake", "uncertain"]
        by_score = review_queue(session, QueueFilters(order="highest_score"))
        assert [round(item.score, 2) for item in by_score] == [0.95, 0.7, 0.55]
        assert [i.score for i in review_queue(session, QueueFilters(verdicts=(Verdict.UNCERTAIN,)))] == [0.55]
        assert [i.score for i in review_queue(session, QueueFilters(min_score=0.6, max_score=0.9))] == [0.7]
        assert review_queue(session, QueueFilters(sources=(Source.EXTENSION,))) == []
        assert review_queue(session, QueueFilters(batch_id="no-such-batch")) == []
        future = datetime.now(UTC) + timedelta(days=1)
        assert review_queue(session, QueueFilters(created_from=future)) == []
        assert len(review_queue(session, QueueFilters(created_to=future))) == 3
        assert queue_size(session) == 3
        assert queue_size(session, exclude_image_ids=[oldest[0].image_id]) == 2
        with pytest.raises(FakewatchError):
            review_queue(session, QueueFilters(order="random"))


def test_label_applies_to_every_check_of_the_image_and_undo_restores(both_dialects: Settings) -> None:
    seeded = seed_queue(both_dialects)
    image_id = image_id_of(both_dialects, seeded.flagged[0])
    with session_scope(both_dialects) as session:
        label_image(session, image_id, "real", as_user("omar"), note="a photo of a real event")
    with session_scope(both_dialects) as session:
        label_image(session, image_id, "fake", as_user(MODERATOR))
    assert review_field(both_dialects, seeded.flagged[0]) is not None and review_field(both_dialects, seeded.flagged[0])["label"] == "fake"  # type: ignore[index]
    with session_scope(both_dialects) as session:
        cached = submit_image(session, _stored_bytes(both_dialects, seeded.flagged[0]), both_dialects).check
        cached_id = cached.id
    assert review_field(both_dialects, cached_id) == review_field(both_dialects, seeded.flagged[0])
    with session_scope(both_dialects) as session:
        undone = undo_last_decision(session, as_user(MODERATOR))
        assert undone is not None and undone.image_ids == (image_id,)
        assert undo_last_decision(session, as_user(MODERATOR)) is None
        assert queue_size(session) == 2  # still reviewed, by omar
    assert review_field(both_dialects, cached_id) == {"label": "real", "by": "omar", "at": review_field(both_dialects, cached_id)["at"]}  # type: ignore[index]
    with session_scope(both_dialects) as session:
        for label, reviewer in (("maybe", MODERATOR), ("fake", " ")):
            with pytest.raises(FakewatchError):
                label_image(session, image_id, label, as_user(reviewer))


def _stored_bytes(settings: Settings, check_id: str) -> bytes:
    with session_scope(settings) as session:
        image = get_check(session, check_id).image
        assert image is not None
        return read_stored(image.storage_key, settings.images_dir)


# --- dashboard aggregates -----------------------------------------------------------------------------------------


def test_dashboard_aggregates_count_what_was_seeded(both_dialects: Settings) -> None:
    seeded = seed_queue(both_dialects)
    with session_scope(both_dialects) as session:
        label_image(session, image_id_of(both_dialects, seeded.flagged[0]), "fake", as_user(MODERATOR))   # model said fake: agree
        label_image(session, image_id_of(both_dialects, seeded.flagged[1]), "real", as_user(MODERATOR))   # model said fake: disagree
        label_image(session, image_id_of(both_dialects, seeded.flagged[2]), "fake", as_user(MODERATOR))   # uncertain
        label_image(session, image_id_of(both_dialects, seeded.real), "real", as_user(MODERATOR))         # model said real: agree
    yesterday = datetime.now(UTC) - timedelta(days=1)
    scored_check(both_dialects, distinct_photos(6, size=96)[5], 0.99, created_at=yesterday)
    with session_scope(both_dialects) as session:
        data = dashboard_data(session, days=7)
    assert data.total_checks == data.done_checks == 5
    assert data.flagged_rate == pytest.approx(4 / 5)
    assert data.verdict_mix == {"real": 1, "uncertain": 1, "fake": 3}
    # The seeded checks are 3 hours old and one is a day old: which UTC days they fall on depends on the hour the
    # test runs (before 03:00 UTC all five are yesterday's), so the days are counted here from the rows themselves.
    with session_scope(both_dialects) as session:
        created = [(check.created_at.astimezone(UTC).date(), check.flagged) for check in session.scalars(select(Check))]
    assert len(data.per_day) == 7 and data.per_day[-1].day == datetime.now(UTC).date()
    assert {day.day: day.checks for day in data.per_day if day.checks} == Counter(day for day, _ in created)
    assert {day.day: day.flagged for day in data.per_day if day.flagged} == Counter(day for day, f in created if f)
    assert sum(day.checks for day in data.per_day) == 5 and sum(day.flagged for day in data.per_day) == 4
    assert [count for _, _, count in data.histogram] == [0, 1, 0, 0, 0, 1, 0, 1, 0, 2]
    assert data.queue.size == 1 and data.queue.age_s is not None and 80_000 < data.queue.age_s < 90_000
    [agreement] = data.agreement
    assert agreement.model_version == "test-model-v1" and agreement.reviewed == 4
    assert agreement.confusion == {"real": {"real": 1, "fake": 0}, "uncertain": {"real": 0, "fake": 1},
                                   "fake": {"real": 1, "fake": 1}}
    assert agreement.agreement_rate == pytest.approx(2 / 3)


def test_dashboard_aggregates_on_an_empty_database(both_dialects: Settings) -> None:
    with session_scope(both_dialects) as session:
        data = dashboard_data(session)
    assert data.total_checks == 0 and data.flagged_rate is None and data.agreement == []
    assert data.queue.size == 0 and data.queue.age_s is None and sum(d.checks for d in data.per_day) == 0
    assert [count for *_, count in data.histogram] == [0] * 10


# --- the console, through AppTest -----------------------------------------------------------------------------------


def test_login_is_required(console_db: Settings) -> None:
    seed_queue(console_db)
    at = new_app(console_db).run()
    assert not at.exception
    assert "Review queue" not in texts(at) and len(at.button) == 1  # the login form only
    at.switch_page("views/dashboard.py").run()
    assert "Dashboard" not in [title.value for title in at.title]
    at.text_input(key="login_name").input(MODERATOR)
    at.text_input(key="login_password").input("not the password")
    press(at, "Log in")
    assert [error.value for error in at.error] == ["Wrong name or password."]
    at.text_input(key="login_password").input(PASSWORD)
    press(at, "Log in")
    assert not at.exception
    assert [title.value for title in at.title] == ["Dashboard"]


def test_labelling_from_the_queue_writes_reviews_and_empties_it(console_db: Settings) -> None:
    seeded = seed_queue(console_db)
    at = logged_in(console_db)
    assert "**3** image(s) waiting" in texts(at)
    for check_id, label in zip(seeded.flagged, ("fake", "real", "fake"), strict=True):
        at.button(key=f"{label}_{image_id_of(console_db, check_id)}").click().run()
        assert not at.exception, at.exception
    assert "Nothing to review under these filters." in texts(at)
    assert [(r.label, r.reviewer, r.check_id) for r in reviews(console_db)] == [
        ("fake", MODERATOR, seeded.flagged[0]), ("real", MODERATOR, seeded.flagged[1]), ("fake", MODERATOR, seeded.flagged[2])]
    review = review_field(console_db, seeded.flagged[1])
    assert review is not None and review["label"] == "real" and review["by"] == MODERATOR


def test_bulk_labelling_and_undo_from_the_queue(console_db: Settings) -> None:
    seeded = seed_queue(console_db)
    at = logged_in(console_db)
    chosen = [image_id_of(console_db, check_id) for check_id in seeded.flagged[:2]]
    for image_id in chosen:
        at.checkbox(key=f"select_{image_id}").check()
    at.button(key="bulk_real").click().run()
    assert "Labelled 2 image(s) real." in texts(at)
    assert sorted(r.image_id for r in reviews(console_db)) == sorted(chosen) and {r.label for r in reviews(console_db)} == {"real"}
    assert "**1** image(s) waiting" in texts(at)
    at.button(key="undo").click().run()
    assert reviews(console_db) == [] and "**3** image(s) waiting" in texts(at)
    assert "Undid labelling 2 image(s) real." in texts(at)
    at.button(key="select_all").click().run()
    at.button(key="bulk_fake").click().run()
    assert len(reviews(console_db)) == 3 and "Nothing to review under these filters." in texts(at)


def test_skip_hides_an_image_for_the_session_without_a_review(console_db: Settings) -> None:
    seeded = seed_queue(console_db)
    at = logged_in(console_db)
    skipped = image_id_of(console_db, seeded.flagged[0])
    at.button(key=f"skip_{skipped}").click().run()
    assert reviews(console_db) == [] and "**2** image(s) waiting, 1 skipped this session" in texts(at)
    assert f"fake_{skipped}" not in [button.key for button in at.button]
    at.button(key="unskip").click().run()
    assert "**3** image(s) waiting" in texts(at)


def test_queue_filters_from_the_sidebar(console_db: Settings) -> None:
    seed_queue(console_db)
    at = logged_in(console_db)
    at.slider(key="queue_scores").set_range(0.9, 1.0).run()
    assert "**1** image(s) waiting" in texts(at)
    at.multiselect(key="queue_sources").select("extension").run()
    assert "Nothing to review under these filters." in texts(at)


def test_image_page_shows_checks_and_reviews_and_labels(console_db: Settings) -> None:
    seeded = seed_queue(console_db)
    with session_scope(console_db) as session:
        image = get_check(session, seeded.flagged[0]).image
        assert image is not None
        sha256 = image.sha256
    at = logged_in(console_db)
    at.query_params["sha256"] = sha256
    at.switch_page("views/image.py").run()
    assert not at.exception, at.exception
    assert "Not reviewed yet." in texts(at) and len(at.dataframe) == 2  # the checks: what they decided, where from
    assert at.dataframe[0].value["model version"].tolist() == ["test-model-v1"]
    at.text_input(key="image_note").input("watermark of a generator")
    at.button(key="image_real").click().run()
    assert [(r.label, r.note) for r in reviews(console_db)] == [("real", "watermark of a generator")]
    assert f"Current label: **real** by {MODERATOR}" in texts(at) and len(at.dataframe) == 4
    history = at.dataframe[-1].value  # the image's own audit trail
    assert history["action"].tolist() == ["review.label"] and history["by"].tolist() == [MODERATOR]
    assert history["before"].tolist() == ["—"] and history["after"].tolist() == ["real"]  # no label before: a dash
    at.text_input(key="image_sha256").input("0" * 64).run()
    assert "No stored image has SHA-256" in texts(at)


def test_image_page_shows_callback_deliveries_and_a_deletion(console_db: Settings) -> None:
    seeded = seed_queue(console_db)
    with session_scope(console_db) as session:
        check = get_check(session, seeded.flagged[0])
        assert check.image is not None
        sha256 = check.image.sha256
        check.callback_url = "https://hooks.example.org/fw"
        session.add(CallbackDelivery(check_id=check.id, url=check.callback_url, status="failed", attempts=4,
                                     last_status_code=503, last_error="The receiver answered HTTP 503."))
        session.flush()
        delete_image(session, console_db, sha256, actor=Actor.system("test"))
    at = logged_in(console_db)
    at.query_params["sha256"] = sha256
    at.switch_page("views/image.py").run()
    assert not at.exception, at.exception
    assert "This image was deleted on" in texts(at)
    assert at.dataframe[0].value["callback"].tolist() == [
        "failed after 4 attempts, last: The receiver answered HTTP 503."]


def test_dashboard_page_renders_with_data_and_empty(console_db: Settings) -> None:
    at = logged_in(console_db, "views/dashboard.py")
    assert "No checks yet." in texts(at)
    assert [metric.value for metric in at.metric] == ["0", "–", "0", "empty"]
    seeded = seed_queue(console_db)
    with session_scope(console_db) as session:
        label_image(session, image_id_of(console_db, seeded.flagged[0]), "fake", as_user(MODERATOR))
    at.run()
    assert not at.exception, at.exception
    assert [metric.value for metric in at.metric][:3] == ["4", "75.0%", "2"]
    assert at.dataframe[0].value["model version"].tolist() == ["test-model-v1"]


def test_models_page_lists_versions_and_curves(console_db: Settings) -> None:
    register_test_model(console_db, "older-model", activate=False)
    register_test_model(console_db, "test-model-v1", activate=True)
    at = logged_in(console_db, "views/models.py")
    assert "Active version: **test-model-v1**" in texts(at)
    table = at.dataframe[0].value
    assert sorted(table["name"]) == ["older-model", "test-model-v1"]
    assert at.dataframe[1].value["roc_auc"].tolist() == [0.91, 0.91]  # nothing missing: still numbers
    assert at.selectbox(key="models_version").value == "test-model-v1"


def test_submitting_a_batch_from_the_page_creates_it(console_db: Settings, image_server: LocalServer) -> None:
    register_test_model(console_db)
    at = logged_in(console_db, "views/batches.py")
    assert "No batch yet." in texts(at)
    urls = [image_server.url(f"/batch/{n}.jpg") for n in range(3)]
    at.text_input(key="batch_name").input("console batch")
    at.text_area(key="batch_urls").input("\n".join([urls[0], "not a url", urls[1], urls[2], urls[0]]))
    press(at, "Submit batch")
    assert not at.exception, at.exception
    with session_scope(console_db) as session:
        [batch] = session.scalars(select(Batch)).all()
        items = list(session.scalars(select(Check).where(Check.batch_id == batch.id).order_by(Check.id)))
    assert batch.name == "console batch" and batch.total == 3
    assert [item["line"] for item in batch.invalid] == [2]
    assert [item.source_url for item in items] == urls and {item.status for item in items} == {"queued"}
    assert f"Batch {batch.id} accepted: 3 URL(s), 1 invalid line(s), 1 duplicate(s)." in texts(at)
    assert at.selectbox(key="batch_choice").value == batch.id
    results = at.dataframe[-1].value
    assert results["url"].tolist() == urls and set(results["status"]) == {"queued"}


def test_an_empty_batch_is_refused_on_the_page(console_db: Settings) -> None:
    at = logged_in(console_db, "views/batches.py")
    at.text_area(key="batch_urls").input("nothing useful here")
    press(at, "Submit batch")
    assert "no valid http(s) URL" in texts(at)


# --- the API shows the label -------------------------------------------------------------------------------------


def test_api_returns_the_moderators_label_for_every_check_of_the_image(embedded_stack: Stack) -> None:
    data = distinct_photos(1, size=128)[0]
    first = embedded_stack.wait_for_check(embedded_stack.post_image(data, wait=10).json()["id"])
    second = embedded_stack.wait_for_check(embedded_stack.post_image(data, wait=10).json()["id"])
    assert first["status"] == second["status"] == "done" and first["review"] is None
    with embedded_stack.session() as session:
        image_id = session.get(Check, first["id"])
        assert image_id is not None and image_id.image_id is not None
        label_image(session, image_id.image_id, "fake", as_user(MODERATOR))
    for check_id in (first["id"], second["id"]):
        review = embedded_stack.get_check(check_id)["review"]
        assert review["label"] == "fake" and review["by"] == MODERATOR and review["at"].endswith("Z")


def test_a_password_hashed_before_werkzeug_still_logs_in_once_and_is_rehashed(console_db: Settings) -> None:
    """Moderators created before the move to werkzeug's hashes keep their passwords: the old scrypt hash is checked
    one last time, then replaced with a werkzeug hash of the same password."""
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"an old password", salt=salt, n=2**14, r=8, p=1, dklen=32)
    legacy = "$".join(["scrypt", "16384", "8", "1", base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])
    with session_scope(console_db) as session:
        session.add(User(name="veteran", password_hash=legacy))
    with session_scope(console_db) as session, pytest.raises(FakewatchError):
        authenticate(session, "veteran", "not the old password")
    with session_scope(console_db) as session:
        assert authenticate(session, "veteran", "an old password").name == "veteran"
    with session_scope(console_db) as session:
        stored = session.scalars(select(User).where(User.name == "veteran")).one().password_hash
        assert stored.startswith("scrypt:") and verify_password("an old password", stored)
        assert authenticate(session, "veteran", "an old password").name == "veteran"


# --- the queue at scale: paging, select all, escalation, reasons, shortcuts ------------------------------------------


def seed_many(settings: Settings, count: int) -> list[str]:
    """``count`` flagged checks of distinct images (scores 0.6 to 0.99), oldest first."""
    register_test_model(settings)
    start = datetime.now(UTC) - timedelta(hours=5)
    return [scored_check(settings, photo, 0.6 + 0.39 * n / max(count - 1, 1), page_url=f"https://example.org/p/{n}",
                         created_at=start + timedelta(seconds=n))
            for n, photo in enumerate(unrelated_images(count))]


def unrelated_images(count: int, size: int = 40) -> list[bytes]:
    """Images no two of which are near-copies (random pixels: PDQ hashes far apart), so each is its own card."""
    out = []
    for seed in range(count):
        pixels = np.random.default_rng(1000 + seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        PILImage.fromarray(pixels).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def card_keys(at: AppTest) -> list[str]:
    return [button.key for button in at.button if button.key and button.key.startswith("fake_")]


def test_a_moderator_labels_150_flagged_images_in_three_actions(console_db: Settings) -> None:
    seed_many(console_db, 150)
    at = logged_in(console_db)
    assert "**150** image(s) waiting" in texts(at) and "Page **1** of **7**" in texts(at)
    assert len(card_keys(at)) == 24
    at.button(key="select_all_matching").click().run()                       # 1: select every matching image
    assert "All **150** image(s) matching the filters are selected, on every page." in texts(at)
    assert reviews(console_db) == []
    at.button(key="bulk_all_fake").click().run()                             # 2: choose the label
    assert "Label **150** image(s) **fake**?" in texts(at) and reviews(console_db) == []
    at.button(key="bulk_confirm").click().run()                              # 3: confirm
    assert not at.exception, at.exception
    assert len(reviews(console_db)) == 150 and {r.label for r in reviews(console_db)} == {"fake"}
    assert "Labelled 150 image(s) fake." in texts(at) and "Nothing to review under these filters." in texts(at)
    at.button(key="undo").click().run()  # one decision: one undo takes all of it back
    assert reviews(console_db) == [] and "**150** image(s) waiting" in texts(at)


def test_paging_reaches_every_image_and_select_all_follows_the_filters(console_db: Settings) -> None:
    seed_many(console_db, 30)
    at = logged_in(console_db)
    first_page = card_keys(at)
    assert len(first_page) == 24 and at.button(key="page_previous").disabled
    at.button(key="page_next").click().run()
    second_page = card_keys(at)
    assert len(second_page) == 6 and not set(first_page) & set(second_page) and at.button(key="page_next").disabled
    assert "Page **2** of **2**" in texts(at)
    at.slider(key="queue_scores").set_range(0.9, 1.0).run()  # new filters: back to page 1, selection dropped
    waiting = int(texts(at).split("**")[1])
    assert 0 < waiting < 30 and "Page **1** of **1**" in texts(at)
    at.button(key="select_all_matching").click().run()
    assert f"All **{waiting}** image(s) matching" in texts(at)
    at.button(key="bulk_all_real").click().run()
    at.button(key="bulk_cancel").click().run()
    assert reviews(console_db) == [] and "matching the filters are selected" not in texts(at)
    at.button(key="select_all_matching").click().run()
    at.button(key="bulk_all_real").click().run()
    at.button(key="bulk_confirm").click().run()
    assert len(reviews(console_db)) == waiting and {r.label for r in reviews(console_db)} == {"real"}
    with session_scope(console_db) as session:
        assert all(item.score < 0.9 for item in review_queue(session, limit=100))


def test_escalation_moves_an_image_to_the_second_review_queue_with_its_note(console_db: Settings) -> None:
    seeded = seed_queue(console_db)
    image_id = image_id_of(console_db, seeded.flagged[0])
    at = logged_in(console_db)
    at.button(key=f"escalate_send_{image_id}").click().run()
    assert "An escalation needs a note" in texts(at) and "**3** image(s) waiting" in texts(at)
    at.text_input(key=f"escalate_note_{image_id}").input("looks like a face swap around the jaw")
    at.button(key=f"escalate_send_{image_id}").click().run()
    assert "Sent to the second-review queue." in texts(at) and "**2** image(s) waiting" in texts(at)
    assert f"fake_{image_id}" not in card_keys(at)
    at.radio(key="queue_which").set_value("Second review (escalated)").run()
    assert card_keys(at) == [f"fake_{image_id}"]
    assert f"Escalated by {MODERATOR}: looks like a face swap around the jaw" in texts(at)
    at.selectbox(key="queue_reason").set_value("face swap").run()
    at.button(key=f"fake_{image_id}").click().run()
    assert [(r.label, r.reason) for r in reviews(console_db)] == [("fake", "face swap")]
    assert "Nothing to review under these filters." in texts(at)
    at.button(key="undo").click().run()  # the escalation is open again
    assert card_keys(at) == [f"fake_{image_id}"]


def test_queue_buttons_have_no_default_and_shortcuts_on_the_first_card(console_db: Settings) -> None:
    seeded = seed_queue(console_db)
    at = logged_in(console_db)
    assert {button.proto.type for button in at.button} == {"secondary"}  # nothing pre-highlighted
    first, second = (image_id_of(console_db, check_id) for check_id in seeded.flagged[:2])
    shortcuts = {button.key: button.proto.shortcut.upper() for button in at.button if button.proto.shortcut}
    assert shortcuts == {f"fake_{first}": "F", f"real_{first}": "G", f"skip_{first}": "S", "undo": "U"}
    at.button(key=f"skip_{first}").click().run()
    shortcuts = {button.key: button.proto.shortcut.upper() for button in at.button if button.proto.shortcut}
    assert shortcuts[f"fake_{second}"] == "F"  # the next card takes the keys


def test_a_reason_outside_the_configured_list_is_refused(console_db: Settings) -> None:
    seeded = seed_queue(console_db)
    with session_scope(console_db) as session, pytest.raises(FakewatchError) as refused:
        label_image(session, image_id_of(console_db, seeded.flagged[0]), "fake", as_user(MODERATOR), reason="because",
                    reasons=console_db.review_reasons)
    assert refused.value.code == "invalid_request" and "AI-generated" in refused.value.message


# --- the Image page: evidence, heat map, zoom -----------------------------------------------------------------------


def test_heat_map_paints_each_pixel_with_the_mean_score_of_its_crops() -> None:
    regions = [{"box": [0, 0, 6, 4], "score": 1.0}, {"box": [4, 0, 10, 4], "score": 0.0}]
    means = region_means(regions, 10, 6)
    assert means[0, 0] == 1.0 and means[0, 5] == 0.5 and means[0, 9] == 0.0
    assert np.isnan(means[5, 0])  # no crop covers the bottom rows
    painted = np.asarray(heatmap_overlay(PILImage.new("RGB", (10, 6), (100, 100, 100)), regions))
    assert painted[0, 0, 0] > 100 > painted[0, 0, 2] and painted[0, 9, 2] > 100 > painted[0, 9, 0]
    assert painted[5, 0].tolist() == [100, 100, 100]


def test_image_page_shows_the_verdict_evidence_heat_map_and_page_url(console_db: Settings) -> None:
    seeded = seed_queue(console_db)
    with session_scope(console_db) as session:
        check = get_check(session, seeded.flagged[1])  # score 0.95: fake at t=0.5 b=0.1
        assert check.image is not None
        sha256, width, height = check.image.sha256, check.image.width, check.image.height
        check.source_url = "https://cdn.example.org/img/1.jpg"
        check.regions = [{"box": [0, 0, width // 2, height], "score": 0.9},
                         {"box": [width // 2, 0, width, height], "score": 0.2}]
    at = logged_in(console_db)
    at.query_params["sha256"] = sha256
    at.switch_page("views/image.py").run()
    assert not at.exception, at.exception
    assert "fake · score 0.950 · confidence 95% · decided by the model's score" in texts(at)
    sources = at.dataframe[1].value  # where each check came from
    assert sources["page URL"].tolist() == ["https://example.org/post/1"]
    assert sources["image URL"].tolist() == ["https://cdn.example.org/img/1.jpg"]
    table = at.dataframe[0].value
    assert table["verdict source"].tolist() == ["model"] and table["confidence"].round(2).tolist() == [0.95]
    assert "Heat map: 2 crop(s), scores 0.20 to 0.90." in texts(at)
    plain = at.get("image")[0].proto.imgs[0].url
    at.toggle(key="image_heatmap").set_value(True).run()
    assert not at.exception, at.exception
    assert at.get("image")[0].proto.imgs[0].url != plain  # the painted copy replaces the original
    at.radio(key="image_zoom").set_value("400%").run()
    assert f"Zoom 400%: {width * 4} × {height * 4} px; scroll to pan." in texts(at)
    at.selectbox(key="image_reason").set_value("genuine photo").run()
    at.button(key="image_real").click().run()
    assert [(r.label, r.reason) for r in reviews(console_db)] == [("real", "genuine photo")]
    assert "real · score 0.950 · confidence n/a (evidence decided) · decided by a moderator's review" in texts(at)
    assert at.dataframe[0].value["verdict source"].tolist() == ["review"]
    at.text_input(key="image_escalate_note").input("second opinion: the label was a guess")
    at.button(key="image_escalate").click().run()
    assert "This image waits in the second-review queue." in texts(at)
    escalations = next(frame.value for frame in at.dataframe if "settled by" in frame.value.columns)
    assert escalations["note"].tolist() == ["second opinion: the label was a guess"]
    history = at.dataframe[-1].value  # the image's audit trail (issue 14) records the escalation too
    assert AuditAction.ESCALATE.value in history["action"].tolist()


def test_console_sessions_last_until_they_expire_or_end(console_db: Settings) -> None:
    with session_scope(console_db) as session:
        token = start_console_session(session, MODERATOR, hours=12)
        short = start_console_session(session, MODERATOR, hours=0.5 / 3600)
        stored = session.scalars(select(ConsoleSession.token_hash)).all()
    assert token not in stored and len(token) >= 40  # only its hash is kept
    with session_scope(console_db) as session:
        assert console_session_user(session, token) == MODERATOR
        assert console_session_user(session, "not-a-token") is None and console_session_user(session, None) is None
    time.sleep(0.6)
    with session_scope(console_db) as session:
        assert console_session_user(session, short) is None  # expired
        end_console_session(session, token)
    with session_scope(console_db) as session:
        assert console_session_user(session, token) is None  # logged out: in every tab
        again = start_console_session(session, MODERATOR, hours=12)
        session.scalars(select(User).where(User.name == MODERATOR)).one().is_active = False
    with session_scope(console_db) as session:
        assert console_session_user(session, again) is None
    assert Settings().console_session_hours == 12


def test_versions_measured_on_a_handful_of_images_show_no_comparable_figures(console_db: Settings) -> None:
    register_test_model(console_db, "test-model-v1", activate=True)
    path = console_db.models_dir / "tiny-retrain.keras"
    path.write_bytes(b"placeholder")
    metrics = {"valid": {"roc_auc": None, "accuracy": 1.0, "counts": {"real": 2, "fake": 1, "total": 3}}}
    path.with_suffix(".json").write_text(json.dumps({"name": "tiny-retrain", "metrics": metrics,
                                                     "history": {"loss": [0.7], "val_loss": [0.8]}}))
    with session_scope(console_db) as session:
        register_model(session, path)
    at = logged_in(console_db, "views/models.py")
    table = at.dataframe[1].value.set_index("name")
    assert table.loc["tiny-retrain", "valid images"] == "3" and table.loc["tiny-retrain", "accuracy"] == "—"
    assert table.loc["tiny-retrain", "metrics"] == "3 validation image(s): too few to compare"
    assert table.loc["test-model-v1", "roc_auc"] == "0.910"  # no counts recorded: kept as measured
    assert at.dataframe[0].value.set_index("name").loc["tiny-retrain", "last active"] == "—"  # never active
    at.selectbox(key="models_version").set_value("tiny-retrain").run()
    assert not at.exception, at.exception
    assert "**loss**" in texts(at) and "**accuracy**" not in texts(at)  # one epoch of loss: its chart, drawn


def test_queue_cards_and_the_image_page_show_the_verdict_source_and_the_evidence(console_db: Settings) -> None:
    register_test_model(console_db)
    check_id = scored_check(console_db, provenance_fixture("C.jpg"), 0.1)  # the model would clear it
    at = logged_in(console_db)
    assert "fake · score 0.100 · confidence n/a (evidence decided) · decided by provenance in the file" in texts(at)
    assert "AI: Content Credentials" in [element.value for element in at.text]  # plain text: it comes from the file
    with session_scope(console_db) as session:
        image = get_check(session, check_id).image
        assert image is not None
        sha256 = image.sha256
    at.query_params["sha256"] = sha256
    at.switch_page("views/image.py").run()
    assert not at.exception, at.exception
    assert "Provenance" in [element.value for element in at.subheader]
    assert "AI: Content Credentials" in [element.value for element in at.text]
    tables = [frame.value for frame in at.dataframe]
    [checks] = [table for table in tables if "verdict source" in table.columns]
    [signals] = [table.value.reset_index() for table in at.table if "says" in table.value.columns]
    [credentials] = [table.value for table in at.table if "value" in table.value.columns]
    assert checks["verdict source"].tolist() == ["provenance"]
    assert signals[["kind", "says"]].values.tolist() == [["c2pa_source_type", "ai"]]
    assert credentials.loc["source types", "value"] == "algorithmicMedia" and not at.json  # no raw JSON
