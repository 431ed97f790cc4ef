"""Roles and the audit trail in the services: each role against each gated action (allowed: exactly one audit event;
refused: ``forbidden`` and nothing written), the append-only event table on both dialects, the console's login
limiter, and the CLI's --role and `fakewatch audit`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from backend.batches.lifecycle import cancel_batch, create_batch
from backend.batches.lists import Entry, validate_entries
from backend.checks.service import get_check, image_visible, store_image, submit_image
from backend.identity.access import PERMISSIONS, Actor
from backend.identity.audit import EventFilters, events_csv, find_events, record
from backend.identity.keys import authenticate as authenticate_key
from backend.identity.keys import create_key, revoke_key
from backend.identity.logins import log_in, retry_after
from backend.identity.users import create_user, revoke_user
from backend.moderation.reviews import escalate_images, label_image, undo_last_decision
from backend.settings import Settings
from backend.storage.db import session_scope
from backend.storage.migrate import alembic_config
from backend.storage.schema import AppendOnlyError, AuditEvent, Batch, Escalation, Review, TrainingRun, User, utcnow
from backend.training.runs import cancel_run, get_run, list_runs, request_training
from backend.training.versions import active_version, promote_version, register_model, roll_back
from core.enums import ActorKind, AuditAction, BatchStatus, Permission, Role, RunStatus
from core.errors import FakewatchError
from fakewatch.cli import cli
from testbed.images import distinct_photos
from tests.actors import OPERATOR
from tests.test_retrain import _fake_version, _review, unique_png

# docs/architecture.md's "Roles and permissions", written out here rather than read from backend/identity/access.py,
# so the table is checked against it.
DESIGN_ROLES: dict[Permission, set[Role]] = {
    Permission.SUBMIT: {Role.SUBMITTER, Role.MODERATOR, Role.ADMIN},
    Permission.READ_ALL: {Role.VIEWER, Role.MODERATOR, Role.ADMIN},
    Permission.CANCEL_BATCH: {Role.SUBMITTER, Role.MODERATOR, Role.ADMIN},
    Permission.LABEL: {Role.MODERATOR, Role.ADMIN},
    Permission.ESCALATE: {Role.MODERATOR, Role.ADMIN},
    Permission.TRAIN: {Role.MODERATOR, Role.ADMIN},
    Permission.PROMOTE: {Role.ADMIN},
    Permission.DELETE: {Role.ADMIN},
    Permission.MANAGE_KEYS: {Role.ADMIN},
    Permission.MANAGE_USERS: {Role.ADMIN},
    Permission.CHANGE_SETTINGS: {Role.ADMIN},
    Permission.READ_AUDIT: {Role.VIEWER, Role.ADMIN},
}


def test_the_access_table_is_designs() -> None:
    assert {permission: set(roles) for permission, roles in PERMISSIONS.items()} == DESIGN_ROLES
    assert set(PERMISSIONS) == set(Permission)


# --- each role against each gated service ---------------------------------------------------------------------


@dataclass
class World:
    """What the gated actions act on, seeded by the operator."""

    actor: Actor
    image_id: int
    sha256: str
    batch_id: str
    versions: dict[str, int]
    spare_key: str
    spare_user: str


def seed_world(settings: Settings, role: Role) -> World:
    with session_scope(settings) as session:
        one = register_model(session, _fake_version(settings.models_dir, "one"), activate=True)
        two = register_model(session, _fake_version(settings.models_dir, "two"))
        for seed in range(4):
            _review(session, settings, unique_png(400 + seed), "fake" if seed % 2 else "real")
        image = store_image(session, distinct_photos(1, size=96)[0], settings)
        key, _ = create_key(session, f"{role}-key", role, actor=OPERATOR)
        create_key(session, "spare", actor=OPERATOR)
        create_user(session, "spare-user", "a long password", actor=OPERATOR)
        batch = create_batch(session, validate_entries([Entry(1, "https://example.org/a.jpg")], 10),
                             api_key_id=key.id).batch
        return World(actor=Actor.of_key(key), image_id=image.id, sha256=image.sha256, batch_id=batch.id,
                     versions={"one": one.id, "two": two.id}, spare_key="spare", spare_user="spare-user")


def _queued_run(session: Session, settings: Settings) -> str:
    """The run this role's request made, or one the operator requests for it to cancel."""
    run = session.scalar(select(TrainingRun).where(TrainingRun.status == RunStatus.QUEUED))
    return run.id if run is not None else request_training(session, settings, actor=OPERATOR, epochs=1).id


Act = Callable[[Session, Settings, World], Any]
# "two" was never compared with the active version: the promotion guard refuses it without a typed reason.
OVERRIDE = "tests: no comparison to guard on"
# Each gated action, in an order that lets every one of them act (undo after label, roll back after promote...),
# with the permission it needs, the audit action it writes and the object that event names.
ACTIONS: list[tuple[str, Permission, AuditAction, Act]] = [
    ("label", Permission.LABEL, AuditAction.LABEL,
     lambda s, _c, w: label_image(s, w.image_id, "fake", w.actor)),
    ("undo", Permission.LABEL, AuditAction.UNDO,
     lambda s, _c, w: undo_last_decision(s, w.actor)),
    ("escalate", Permission.ESCALATE, AuditAction.ESCALATE,
     lambda s, _c, w: escalate_images(s, [w.image_id], "a second look, please", w.actor)),
    ("promote", Permission.PROMOTE, AuditAction.PROMOTE,
     lambda s, c, w: promote_version(s, w.versions["two"], c, actor=w.actor, override_reason=OVERRIDE)),
    ("roll back", Permission.PROMOTE, AuditAction.ROLL_BACK,
     lambda s, _c, w: roll_back(s, actor=w.actor)),
    ("start training", Permission.TRAIN, AuditAction.TRAINING_START,
     lambda s, c, w: request_training(s, c, actor=w.actor, epochs=1)),
    ("cancel training", Permission.TRAIN, AuditAction.TRAINING_CANCEL,
     lambda s, c, w: cancel_run(s, _queued_run(s, c), actor=w.actor)),
    ("cancel batch", Permission.CANCEL_BATCH, AuditAction.BATCH_CANCEL,
     lambda s, _c, w: cancel_batch(s, w.batch_id, actor=w.actor)),
    ("create key", Permission.MANAGE_KEYS, AuditAction.KEY_CREATE,
     lambda s, _c, w: create_key(s, "made by test", Role.VIEWER, actor=w.actor)),
    ("revoke key", Permission.MANAGE_KEYS, AuditAction.KEY_REVOKE,
     lambda s, _c, w: revoke_key(s, w.spare_key, actor=w.actor)),
    ("create user", Permission.MANAGE_USERS, AuditAction.USER_CREATE,
     lambda s, _c, w: create_user(s, "newcomer", "another long password", Role.VIEWER, actor=w.actor)),
    ("revoke user", Permission.MANAGE_USERS, AuditAction.USER_REVOKE,
     lambda s, _c, w: revoke_user(s, w.spare_user, actor=w.actor)),
]


# Actions on an object the operator made (a training run), which a submitter key cannot see.
NOT_ITS_OWN = {"cancel training"}


def _events(settings: Settings) -> list[AuditEvent]:
    with session_scope(settings) as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def _state(settings: Settings) -> tuple[Any, ...]:
    """Everything the actions change, to show that a refused one changed nothing."""
    with session_scope(settings) as session:
        return (session.scalar(select(func.count()).select_from(Review)),
                session.scalar(select(func.count()).select_from(Escalation)),
                active_version(session).name,  # type: ignore[union-attr]
                tuple(session.execute(select(TrainingRun.id, TrainingRun.status, TrainingRun.cancel_requested))),
                session.get(Batch, _batch_ids(session)[0]).status,  # type: ignore[union-attr]
                tuple(session.execute(text("SELECT name, role, revoked_at FROM api_keys ORDER BY id"))),
                tuple(session.execute(text("SELECT name, role, is_active FROM users ORDER BY id"))))


def _batch_ids(session: Session) -> list[str]:
    return list(session.scalars(select(Batch.id)))


@pytest.mark.parametrize("role", list(Role))
def test_each_role_against_each_gated_service(database: Settings, role: Role) -> None:
    settings = database.model_copy(update={"training_datasets": ("none",)})
    world = seed_world(settings, role)
    for name, permission, action, act in ACTIONS:
        before_events, before_state = len(_events(settings)), _state(settings)
        if role in DESIGN_ROLES[permission]:
            with session_scope(settings) as session:
                act(session, settings, world)
            new = _events(settings)[before_events:]
            mine = [event for event in new if event.actor_name == world.actor.name]
            assert [event.action for event in mine] == [action], f"{role} {name}: {[e.action for e in new]}"
            assert mine[0].actor_kind is ActorKind.KEY and mine[0].actor_role is role
            assert mine[0].actor_id == world.actor.id and mine[0].object_id
        else:
            with pytest.raises(FakewatchError) as refused, session_scope(settings) as session:
                act(session, settings, world)
            # Another key's object is not_found for a submitter, never forbidden: ids leak nothing.
            expected = ("not_found", 404) if role is Role.SUBMITTER and name in NOT_ITS_OWN else ("forbidden", 403)
            assert (refused.value.code, refused.value.status) == expected, f"{role} {name}"
            assert len(_events(settings)) == before_events and _state(settings) == before_state, f"{role} {name}"


def test_events_record_before_and_after(database: Settings) -> None:
    world = seed_world(database, Role.ADMIN)
    with session_scope(database) as session:
        label_image(session, world.image_id, "real", world.actor, note="first")
    with session_scope(database) as session:
        label_image(session, world.image_id, "fake", world.actor)
    with session_scope(database) as session:
        undo_last_decision(session, world.actor)
    with session_scope(database) as session:
        promote_version(session, world.versions["two"], database, actor=world.actor, override_reason=OVERRIDE)
        history = find_events(session, EventFilters(object_type="image", object_id=world.sha256))
        promoted = find_events(session, EventFilters(actions=[AuditAction.PROMOTE]))
    undo, second, first = history  # newest first
    assert first.before is None and first.after is not None and first.after["label"] == "real"
    assert first.after["note"] == "first" and first.after["by"] == "API key admin-key"
    assert second.before is not None and second.before["label"] == "real" and second.after["label"] == "fake"  # type: ignore[index]
    assert undo.action == "review.undo" and undo.before["label"] == "fake" and undo.after["label"] == "real"  # type: ignore[index]
    [promotion] = promoted
    assert promotion.before == {"active": "one", "active_id": world.versions["one"]}
    assert promotion.after is not None and promotion.after["override_reason"] == OVERRIDE  # the guard was overridden
    assert {k: promotion.after[k] for k in ("active", "active_id")} == {"active": "two", "active_id": world.versions["two"]}
    assert promotion.after["refusal"].startswith("two was never measured against the active version one")
    csv_text = events_csv(history)
    assert csv_text.splitlines()[0].startswith("id,at,actor_kind,actor_id,actor_name,actor_role")
    assert len(csv_text.splitlines()) == 4 and '"{""label"": ""real""' in csv_text


def test_a_refused_or_failed_action_writes_no_event(database: Settings) -> None:
    """The event is in the action's transaction: an action that fails after recording takes its event with it."""
    world = seed_world(database, Role.ADMIN)
    with pytest.raises(FakewatchError), session_scope(database) as session:
        label_image(session, world.image_id, "fake", world.actor)
        raise FakewatchError("invalid_request", "the caller failed after the label")
    assert not [event for event in _events(database) if event.action == AuditAction.LABEL]
    with pytest.raises(FakewatchError), session_scope(database) as session:
        label_image(session, world.image_id, "maybe", world.actor)
    assert not [event for event in _events(database) if event.action == AuditAction.LABEL]


# --- the audit table is append-only -------------------------------------------------------------------------------


def test_audit_events_are_append_only(any_database: Settings) -> None:
    with session_scope(any_database) as session:
        event = record(session, OPERATOR, AuditAction.SETTING_CHANGE, ("setting", "x"), {"v": 1}, {"v": 2})
        event_id = event.id
    with pytest.raises(AppendOnlyError), session_scope(any_database) as session:
        stored = session.get(AuditEvent, event_id)
        assert stored is not None
        stored.action = "nothing.happened"
        session.flush()
    with pytest.raises(AppendOnlyError), session_scope(any_database) as session:
        session.delete(session.get(AuditEvent, event_id))
        session.flush()
    for statement in (update(AuditEvent).values(action="x"), delete(AuditEvent)):
        with pytest.raises(AppendOnlyError), session_scope(any_database) as session:
            session.execute(statement)
    # Below the ORM, the database's own trigger refuses (SQLite and PostgreSQL alike).
    for sql in ("UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError) as refused, session_scope(any_database) as session:
            session.execute(text(sql))
        assert "append-only" in str(refused.value)
    with session_scope(any_database) as session:
        [kept] = session.scalars(select(AuditEvent)).all()
        assert kept.action == AuditAction.SETTING_CHANGE and kept.after == {"v": 2}


# --- ownership in the services ------------------------------------------------------------------------------------


def test_a_submitter_reads_only_its_own_work(any_database: Settings) -> None:
    photo, shared = distinct_photos(2, size=96)
    with session_scope(any_database) as session:
        register_model(session, _fake_version(any_database.models_dir, "one"), activate=True)
        mine_key, _ = create_key(session, "mine", actor=OPERATOR)
        other_key, _ = create_key(session, "other", actor=OPERATOR)
        viewer_key, _ = create_key(session, "viewer", Role.VIEWER, actor=OPERATOR)
        mine, other, viewer = Actor.of_key(mine_key), Actor.of_key(other_key), Actor.of_key(viewer_key)
        check = submit_image(session, photo, any_database, api_key_id=mine.id).check
        copies = [submit_image(session, shared, any_database, api_key_id=owner.id).check for owner in (mine, other)]
        session.add(TrainingRun(params={}, progress={}, status=RunStatus.DONE, api_key_id=viewer.id))
    with session_scope(any_database) as session:
        assert get_check(session, check.id, mine).id == check.id
        assert get_check(session, check.id, viewer).id == check.id
        with pytest.raises(FakewatchError) as hidden:
            get_check(session, check.id, other)
        assert hidden.value.code == "not_found"
        image = get_check(session, check.id).image
        assert image is not None and image_visible(session, image, mine) and image_visible(session, image, viewer)
        assert not image_visible(session, image, other)
        # The same bytes from two keys: one stored image, readable by both, each reading only its own check.
        both = get_check(session, copies[0].id).image
        assert both is not None and copies[1].image_id == both.id
        assert image_visible(session, both, mine) and image_visible(session, both, other)
        with pytest.raises(FakewatchError):
            get_check(session, copies[0].id, other)
        [run] = list_runs(session, actor=viewer)
        assert list_runs(session, actor=mine) == [] and get_run(session, run.id, viewer).id == run.id
        with pytest.raises(FakewatchError):
            get_run(session, run.id, mine)


# --- the console's login limiter -------------------------------------------------------------------------------------


LIMITS = {"login_delay_after_failures": 2, "login_delay_base_s": 0.4, "login_lockout_failures": 4,
          "login_lockout_s": 60.0}


def _attempt(settings: Settings, name: str, password: str, address: str | None) -> str:
    try:
        with session_scope(settings) as session:
            log_in(session, settings, name, password, address)
    except FakewatchError as error:
        return error.code
    return "ok"


def _login_events(settings: Settings) -> list[tuple[str, str, str | None]]:
    return [(e.action, e.object_id, e.address) for e in _events(settings) if e.action.startswith("login.")]


def test_failed_logins_wait_longer_then_lock_out(database: Settings) -> None:
    settings = database.model_copy(update=LIMITS)
    with session_scope(settings) as session:
        create_user(session, "mona", "the right password", actor=OPERATOR)
    assert [_attempt(settings, "mona", "wrong", "10.0.0.1") for _ in range(2)] == ["unauthorized"] * 2
    # The third attempt comes too soon: refused without looking at the password, even the right one.
    assert _attempt(settings, "mona", "the right password", "10.0.0.1") == "rate_limited"
    with session_scope(settings) as session:
        assert 0 < retry_after(session, settings, "mona", None) <= 0.4
    time.sleep(0.45)
    assert _attempt(settings, "mona", "wrong", "10.0.0.1") == "unauthorized"  # 3 failures: the wait doubles
    with session_scope(settings) as session:
        assert 0.4 < retry_after(session, settings, "mona", None) <= 0.8
    time.sleep(0.85)
    assert _attempt(settings, "mona", "wrong", "10.0.0.1") == "unauthorized"  # 4 failures: locked out
    with session_scope(settings) as session:
        assert 59 < retry_after(session, settings, "mona", None) <= 60
        assert retry_after(session, settings, "mona", None, now=utcnow() + timedelta(seconds=61)) == 0
    time.sleep(0.9)
    assert _attempt(settings, "mona", "the right password", "10.0.0.2") == "rate_limited"
    assert _login_events(settings) == [
        ("login.failed", "mona", "10.0.0.1"), ("login.failed", "mona", "10.0.0.1"),
        ("login.throttled", "mona", "10.0.0.1"), ("login.failed", "mona", "10.0.0.1"),
        ("login.failed", "mona", "10.0.0.1"), ("login.throttled", "mona", "10.0.0.2")]
    failed = [e for e in _events(settings) if e.action == AuditAction.LOGIN_FAILED]
    assert {(e.actor_kind, e.actor_role, e.actor_name) for e in failed} == {(ActorKind.ANONYMOUS, None, "mona")}


def test_failed_logins_count_per_address_across_names_and_a_success_resets(database: Settings) -> None:
    settings = database.model_copy(update={**LIMITS, "login_delay_base_s": 30.0})
    with session_scope(settings) as session:
        create_user(session, "mona", "the right password", actor=OPERATOR)
    assert _attempt(settings, "alice", "guess", "10.9.9.9") == "unauthorized"
    assert _attempt(settings, "bob", "guess", "10.9.9.9") == "unauthorized"
    # A third name from the same address waits; the same name from elsewhere does not.
    assert _attempt(settings, "mona", "the right password", "10.9.9.9") == "rate_limited"
    assert _attempt(settings, "mona", "wrong", "10.1.1.1") == "unauthorized"
    assert _attempt(settings, "mona", "the right password", "10.1.1.1") == "ok"
    with session_scope(settings) as session:
        assert retry_after(session, settings, "mona", "10.1.1.1") == 0  # the success cleared mona's failures
        assert retry_after(session, settings, "carol", "10.9.9.9") > 0  # not the address's
    assert [action for action, *_ in _login_events(settings)] == [
        "login.failed", "login.failed", "login.throttled", "login.failed", "login.succeeded"]


# --- the CLI ----------------------------------------------------------------------------------------------------------


def test_cli_creates_keys_and_users_with_roles_and_prints_the_audit_trail(database: Settings) -> None:
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "reader", "--role", "viewer"], obj=database)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("fw_")
    default = runner.invoke(cli, ["keys", "create", "script"], obj=database).stdout.strip().splitlines()[-1]
    with session_scope(database) as session:
        assert authenticate_key(session, key).role is Role.VIEWER
        assert authenticate_key(session, default).role is Role.SUBMITTER
    refused = runner.invoke(cli, ["keys", "create", "x", "--role", "owner"], obj=database)
    assert refused.exit_code == 2 and "owner" in refused.output
    user = runner.invoke(cli, ["users", "create", "vera", "--role", "viewer", "--password-stdin"],
                         input="a long password\n", obj=database)
    assert user.exit_code == 0 and "Created viewer vera." in user.output
    submitter = runner.invoke(cli, ["users", "create", "sam", "--role", "submitter", "--password-stdin"],
                              input="a long password\n", obj=database)
    assert submitter.exit_code == 2  # submitting is for API keys
    assert runner.invoke(cli, ["users", "revoke", "vera"], obj=database).exit_code == 0
    with session_scope(database) as session:
        vera = session.scalars(select(User).where(User.name == "vera")).one()
        assert vera.role is Role.VIEWER and not vera.is_active

    printed = runner.invoke(cli, ["audit", "--since", "1h"], obj=database)
    assert printed.exit_code == 0, printed.output
    events = [json.loads(line) for line in printed.stdout.splitlines()]
    assert [event["action"] for event in events] == ["key.create", "key.create", "user.create", "user.revoke"]
    assert {event["actor_kind"] for event in events} == {"system"}
    assert events[0]["after"]["name"] == "reader" and events[0]["after"]["role"] == "viewer"
    assert key not in printed.stdout and default not in printed.stdout, "the audit trail never holds a key"
    only = runner.invoke(cli, ["audit", "--since", "2000-01-01T00:00:00Z", "--action", "user.revoke"], obj=database)
    assert [json.loads(line)["object_type"] for line in only.stdout.splitlines()] == ["user"]
    assert runner.invoke(cli, ["audit", "--since", "1h", "--object", "api_key"], obj=database).stdout.count("\n") == 2
    assert runner.invoke(cli, ["audit", "--since", "tomorrow"], obj=database).exit_code == 2


def test_migration_makes_old_keys_submitters_and_old_users_admins(settings: Settings) -> None:
    """Rows written before roles existed (the revision before 0005_roles_audit) get their roles from it."""
    config = alembic_config(settings.database)
    command.upgrade(config, "0005_roles_audit-1")
    with session_scope(settings) as session:
        session.execute(text("INSERT INTO api_keys (name, prefix, key_hash, created_at) "
                             "VALUES ('old', 'fw_old', 'h', CURRENT_TIMESTAMP)"))
        session.execute(text("INSERT INTO users (name, password_hash, is_active, created_at) "
                             "VALUES ('veteran', 'x', 1, CURRENT_TIMESTAMP)"))
    command.upgrade(config, "head")
    with session_scope(settings) as session:
        assert list(session.execute(text("SELECT name, role FROM api_keys"))) == [("old", "submitter")]
        assert list(session.execute(text("SELECT name, role FROM users"))) == [("veteran", "admin")]
    command.downgrade(config, "0005_roles_audit-1")
    command.upgrade(config, "head")


def test_a_batch_cancelled_by_its_owner_is_recorded_once(database: Settings) -> None:
    world = seed_world(database, Role.SUBMITTER)
    with session_scope(database) as session:
        assert cancel_batch(session, world.batch_id, actor=world.actor).status is BatchStatus.CANCELLED
    with session_scope(database) as session:
        cancel_batch(session, world.batch_id, actor=world.actor)  # already final: nothing changes, nothing recorded
    assert [e.action for e in _events(database) if e.object_type == "batch"] == ["batch.cancel"]
