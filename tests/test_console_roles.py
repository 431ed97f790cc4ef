"""The console by role (streamlit.testing.v1.AppTest over a real SQLite database): each role sees the controls its
role allows and no others, the Audit page (admin and viewer) filters the trail, the login limiter answers through
the form, a revoked user is logged out, and images reach the page as data: URLs, never as /media files."""

from __future__ import annotations

from typing import Any

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Image

from backend.checks.service import get_check
from backend.identity.audit import EventFilters, find_events
from backend.identity.users import create_user, revoke_user
from backend.moderation.reviews import label_image
from backend.settings import Settings
from backend.storage.db import session_scope
from core.enums import Role
from tests.actors import OPERATOR, as_user
from tests.test_admin import image_id_of, new_app, press, register_test_model, seed_queue, texts

PASSWORD = "a long enough password"


def user(settings: Settings, name: str, role: Role) -> None:
    with session_scope(settings) as session:
        create_user(session, name, PASSWORD, role, actor=OPERATOR)


def log_in(settings: Settings, name: str, password: str = PASSWORD) -> AppTest:
    at = new_app(settings).run()
    at.text_input(key="login_name").input(name)
    at.text_input(key="login_password").input(password)
    press(at, "Log in")
    assert not at.exception, at.exception
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def keys(at: AppTest) -> set[str]:
    return {button.key for button in at.button if button.key} | {box.key for box in at.checkbox if box.key}


def image_urls(at: AppTest) -> list[str]:
    """The address of every image on the page (st.image elements)."""
    return [url for element in at.get("image") if isinstance(element, Image) for url in element.value]


def labels(at: AppTest) -> set[str]:
    return {button.label for button in at.button}


@pytest.fixture
def world(database: Settings) -> dict[str, Any]:
    """The queue seeded (one labelled image), a candidate beside the active version, and one user per role."""
    seeded = seed_queue(database)
    # older-model was active before, so an admin has a version to roll back to (issue 16: only such versions).
    register_test_model(database, "older-model", activate=True)
    register_test_model(database, "test-model-v1", activate=True)
    with session_scope(database) as session:
        label_image(session, image_id_of(database, seeded.real), "real", as_user("someone"))
    for role in (Role.VIEWER, Role.MODERATOR, Role.ADMIN):
        user(database, role.value, role)
    return {"settings": database, "seeded": seeded}


# What each role sees, page by page: the controls (button and checkbox keys) that are there, and those that are not.
LABELLING = {"undo", "select_all", "bulk_fake", "bulk_real"}


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MODERATOR, Role.ADMIN])
def test_each_role_sees_only_the_controls_it_may_use(world: dict[str, Any], role: Role) -> None:
    settings = world["settings"]
    at = log_in(settings, role.value)
    assert f"Logged in as **{role.value}** ({role.value})" in texts(at)
    queue = keys(at)
    first = image_id_of(settings, world["seeded"].flagged[0])
    may_label = role in (Role.MODERATOR, Role.ADMIN)
    assert (LABELLING | {f"fake_{first}", f"select_{first}", f"skip_{first}"} <= queue) is may_label
    assert (not (LABELLING & queue)) is (not may_label)
    assert "**3** image(s) waiting" in texts(at)  # every role reads the queue

    at.query_params["sha256"] = _sha256(settings, world["seeded"].flagged[0])
    open_page(at, "views/image.py")
    assert ({"image_fake", "image_real"} <= keys(at)) is may_label
    assert "Not reviewed yet." in texts(at)

    open_page(at, "views/batches.py")
    assert ("Submit batch" in labels(at)) is may_label  # viewers do not submit

    open_page(at, "views/models.py")
    assert ("Retrain" in labels(at)) is may_label
    assert ("retrain_rollback" in keys(at)) is (role is Role.ADMIN)

    if role is Role.MODERATOR:  # the Audit page is not even registered for a moderator
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page("views/audit.py")
        return
    open_page(at, "views/audit.py")
    assert "Audit" in [title.value for title in at.title]


def _sha256(settings: Settings, check_id: str) -> str:
    with session_scope(settings) as session:
        image = get_check(session, check_id).image
        assert image is not None
        return image.sha256


def test_a_moderators_labels_and_undo_are_each_one_event_on_the_audit_page(world: dict[str, Any]) -> None:
    settings = world["settings"]
    at = log_in(settings, "moderator")
    first = image_id_of(settings, world["seeded"].flagged[0])
    at.button(key=f"fake_{first}").click().run()
    at.button(key="undo").click().run()
    with session_scope(settings) as session:
        mine = find_events(session, EventFilters(actor="moderator"))
    assert [event.action for event in mine] == ["review.undo", "review.label", "login.succeeded"]
    admin = open_page(log_in(settings, "admin"), "views/audit.py")
    table = admin.dataframe[0].value
    assert {"review.label", "review.undo", "user.create", "login.succeeded"} <= set(table["action"])
    admin.text_input(key="audit_actor").input("moderator").run()
    assert admin.dataframe[0].value["action"].tolist() == ["review.undo", "review.label", "login.succeeded"]
    admin.multiselect(key="audit_actions").select("review.label").run()
    [row] = admin.dataframe[0].value.to_dict("records")
    assert row["object_type"] == "image" and row["actor_role"] == "moderator" and "'label': 'fake'" in row["after"]
    admin.text_input(key="audit_object_id").input("no-such-object").run()
    assert "No event matches these filters." in texts(admin)
    assert [button.proto.label for button in admin.get("download_button")] == ["Download CSV"]


def test_a_viewer_may_read_the_audit_trail_but_not_label(world: dict[str, Any]) -> None:
    settings = world["settings"]
    at = open_page(log_in(settings, "viewer"), "views/audit.py")
    assert "Audit" in [title.value for title in at.title]
    assert "review.label" in set(at.dataframe[0].value["action"])


def test_failed_logins_through_the_form_are_throttled_and_recorded(database: Settings) -> None:
    settings = database.model_copy(update={"login_delay_after_failures": 2, "login_delay_base_s": 30.0})
    user(settings, "mona", Role.MODERATOR)
    at = new_app(settings).run()
    messages = []
    for password in ("wrong", "wrong again", PASSWORD):
        at.text_input(key="login_name").input("mona")
        at.text_input(key="login_password").input(password)
        press(at, "Log in")
        messages.append([error.value for error in at.error])
    assert messages[:2] == [["Wrong name or password."]] * 2
    [throttled] = messages[2]
    seconds = int(throttled.removeprefix("Too many failed logins: try again in ").removesuffix(" s."))
    assert 20 <= seconds <= 30  # 30 s after the second failure, less the time it took to try again
    assert "Review queue" not in [title.value for title in at.title]
    with session_scope(settings) as session:
        logins = [event.action for event in find_events(session, EventFilters(object_type="login"))]
    assert logins == ["login.throttled", "login.failed", "login.failed"]


def test_a_revoked_user_is_logged_out_at_their_next_click(world: dict[str, Any]) -> None:
    settings = world["settings"]
    at = log_in(settings, "moderator")
    assert "Review queue" in [title.value for title in at.title]
    with session_scope(settings) as session:
        revoke_user(session, "moderator", actor=OPERATOR)
    at.run()
    assert "Review queue" not in [title.value for title in at.title] and "Log in" in labels(at)


def test_images_reach_the_page_as_data_urls_not_media_files(world: dict[str, Any]) -> None:
    """Streamlit serves bytes given to st.image from /media/..., to anyone with the address; the console hands it
    data: URLs instead, which travel only in the logged-in session's own websocket."""
    settings = world["settings"]
    at = log_in(settings, "viewer")
    urls = image_urls(at)
    assert len(urls) == 3 and all(url.startswith("data:image/jpeg;base64,") for url in urls)
    at.query_params["sha256"] = _sha256(settings, world["seeded"].flagged[0])
    open_page(at, "views/image.py")
    [original] = image_urls(at)
    assert original.startswith("data:image/jpeg;base64,")
    assert not any("/media/" in url for url in [*urls, original])
