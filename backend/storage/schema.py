"""The SQLAlchemy schema: the database is the source of truth for every check's state.

Every column holding one of core.enums' sets is an ``enum_column``: stored as its text, refused by a CHECK
constraint when it is not a member (migration 0003), and read back as the enum member. Changes go through Alembic
revisions in backend/storage/migrations/versions/."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, ORMExecuteState, Session, mapped_column, relationship

from core.enums import (
    ACTIVE_RUN_STATUSES,
    ActivationKind,
    ActorKind,
    BatchStatus,
    CheckStatus,
    DeliveryStatus,
    Label,
    Role,
    RunStatus,
    Source,
    Verdict,
    VerdictSource,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat_z(value: datetime | None) -> str | None:
    """A timestamp as the API writes it: ISO 8601 in UTC with a ``Z``."""
    return value.isoformat().replace("+00:00", "Z") if value else None


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always returned timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def enum_column(enum: type[StrEnum], constraint: str) -> Enum:
    """A column type for one of core.enums' sets: its values as text (16 characters at most), a CHECK constraint
    named ``constraint`` that only they pass, and enum members when read."""
    return Enum(enum, name=constraint, native_enum=False, create_constraint=True, length=16, validate_strings=True,
                values_callable=lambda members: [member.value for member in members])


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    byte_size: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(200))
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    # Evidence read from the original bytes once, whatever the model version (a check's "provenance",
    # docs/provenance.md).
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # PDQ perceptual hash (64 hex digits) and its quality (0-100), for near-duplicate matching.
    pdq_hex: Mapped[str | None] = mapped_column(String(64))
    pdq_quality: Mapped[int | None] = mapped_column(Integer)
    # "image" or "video" (a clip, or an animation of more than one frame), its length, and the PDQ hashes of its
    # frames at one a second ([{"time_s", "pdq_hex", "quality"}]) for vPDQ matching (migration 0011_video).
    media: Mapped[str] = mapped_column(String(8), default="image", server_default="image")
    duration_s: Mapped[float | None] = mapped_column(Float)
    frame_hashes: Mapped[list[Any] | None] = mapped_column(JSON)
    # Why the detector should not judge this image ("out of scope: ..."; core/scope.py), read from its pixels when
    # it is scored; None for an image in scope or not scored yet.
    scope: Mapped[str | None] = mapped_column(String(160))
    # Deleted on request or by retention (backend/delivery/retention.py): the bytes and derived files are gone; the row stays
    # for the checks' audit trail (and, unless purged, its PDQ hash and labels for near-duplicate matching).
    deleted_at: Mapped[datetime | None]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the key: keys are 256-bit random tokens, so a fast hash is enough to make a stolen table useless.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # What the key may do (backend/identity/access.py); keys made before roles existed are submitters (migration 0005).
    role: Mapped[Role] = mapped_column(enum_column(Role, "ck_api_keys_role"), default=Role.SUBMITTER)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    # Signs this key's callbacks (HMAC-SHA256): the receiver must know it, so it is kept as is, never hashed.
    secret: Mapped[str | None] = mapped_column(String(80))
    # Where this key's checks and batches are posted when they finish, unless a submission names its own URL.
    callback_url: Mapped[str | None] = mapped_column(Text)


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    file: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    architecture: Mapped[str] = mapped_column(String(50), default="default")
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the full metadata JSON
    threshold: Mapped[float] = mapped_column(Float, default=0.5)
    band: Mapped[float] = mapped_column(Float, default=0.0)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None]


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[BatchStatus] = mapped_column(enum_column(BatchStatus, "ck_batches_status"),
                                                default=BatchStatus.QUEUED)
    total: Mapped[int] = mapped_column(Integer, default=0)
    invalid: Mapped[list[Any]] = mapped_column(default=list)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    callback_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Check(Base):
    __tablename__ = "checks"
    __table_args__ = (
        Index("ix_checks_status_queued_at", "status", "queued_at"),
        # The cached-score lookup (backend/checks/service.py) seeks the model's own scorings, skipping cached answers.
        Index("ix_checks_image_model_cached", "image_id", "model_version_id", "cached"),
        Index("ix_checks_batch_status", "batch_id", "status"),
        Index("ix_checks_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # Null until a batch item's URL has been fetched.
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"))
    source: Mapped[Source] = mapped_column(enum_column(Source, "ck_checks_source"))
    source_url: Mapped[str | None] = mapped_column(Text)
    page_url: Mapped[str | None] = mapped_column(Text)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"))
    status: Mapped[CheckStatus] = mapped_column(enum_column(CheckStatus, "ck_checks_status"),
                                                default=CheckStatus.QUEUED)
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    score: Mapped[float | None] = mapped_column(Float)
    verdict: Mapped[Verdict | None] = mapped_column(enum_column(Verdict, "ck_checks_verdict"))
    # What decided the verdict when the check was scored (a later review overrides both when read).
    verdict_source: Mapped[VerdictSource | None] = mapped_column(
        enum_column(VerdictSource, "ck_checks_verdict_source"))
    # The labelled near-duplicate that decided (or was weighed): a check's "match" (docs/matching.md), plus every
    # label seen.
    match: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The detector's per-crop scores with their boxes: [{"box": [x0, y0, x1, y1], "score": 0.8}, ...].
    regions: Mapped[list[Any] | None] = mapped_column(JSON)
    # A video's sampled frames: [{"time_s", "score", "verdict", "regions"}] (the clip's score is ``score``).
    frames: Mapped[list[Any] | None] = mapped_column(JSON)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    # Posted the check once it is final (a batch item has none: its batch is posted when it finishes).
    callback_url: Mapped[str | None] = mapped_column(Text)
    # When its image was deleted: the check and its verdict stay, its ``image`` reads null from then on.
    image_deleted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the check was last handed to the broker; the sweeper re-queues checks that sat too long.
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # A running check belongs to its worker until this moment; the worker renews it while it works, so a lapsed
    # lease means a dead worker (migration 0010). Null on rows claimed before leases existed.
    lease_expires_at: Mapped[datetime | None]
    # Which worker process holds (or last held) it: "host:pid", for operators and the kill tests.
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    # The broker refused the message when the check was accepted: the sweeper sends it once the broker is back.
    unsent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    image: Mapped[Image | None] = relationship(lazy="joined")
    model_version: Mapped[ModelVersion | None] = relationship(lazy="joined")


class CallbackDelivery(Base):
    """One callback owed to a receiver: a final check or a finished batch, posted (and retried) by the callbacks
    worker (backend/delivery/callbacks.py)."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (Index("ix_callback_deliveries_status_next", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # One delivery per check or batch, even when two workers finish it at once.
    check_id: Mapped[str | None] = mapped_column(ForeignKey("checks.id"), unique=True)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), unique=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[DeliveryStatus] = mapped_column(enum_column(DeliveryStatus, "ck_callback_deliveries_status"),
                                                   default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    # When the next attempt is due; while one is in flight, when it counts as lost.
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]


class IdempotencyKey(Base):
    """A POST that carried an ``Idempotency-Key`` header: what it created, so the same request sent again (a client
    retrying after a dropped connection) gets that object back instead of a second one."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("api_key_id", "key", name="uq_idempotency_keys_api_key_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    key: Mapped[str] = mapped_column(String(200))
    # Which endpoint it was sent to, and the SHA-256 of its body: the same key on another request is refused.
    endpoint: Mapped[str] = mapped_column(String(40))
    fingerprint: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    """A moderator of the admin console."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    # viewer, moderator or admin (never submitter: backend/identity/users.py refuses it); existing users became admins.
    role: Mapped[Role] = mapped_column(enum_column(Role, "ck_users_role"), default=Role.MODERATOR)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Review(Base):
    """A moderator's label for an image; the latest one is what the API shows in a check's ``review``."""

    __tablename__ = "reviews"
    __table_args__ = (Index("ix_reviews_image_created", "image_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    check_id: Mapped[str | None] = mapped_column(ForeignKey("checks.id"))
    label: Mapped[Label] = mapped_column(enum_column(Label, "ck_reviews_label"))
    reviewer: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when this review was not a look at these bytes but followed a moderator's label of a near-copy (the
    # image labelled, and how many PDQ bits apart the two are); written in the same decision, undone with it.
    matched_image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"))
    match_distance: Mapped[int | None] = mapped_column(Integer)


class ListedHash(Base):
    """A PDQ hash with a label from a shared hash list (``fakewatch hashes import``): it matches like a labelled
    image, though no image is stored for it."""

    __tablename__ = "listed_hashes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pdq_hex: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[Label] = mapped_column(enum_column(Label, "ck_listed_hashes_label"))
    note: Mapped[str] = mapped_column(Text, default="")
    added_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Escalation(Base):
    """An image a moderator sent to a second review, with a note; open until someone labels the image."""

    __tablename__ = "escalations"
    __table_args__ = (Index("ix_escalations_open", "resolved_at", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    check_id: Mapped[str | None] = mapped_column(ForeignKey("checks.id"))
    note: Mapped[str] = mapped_column(Text)
    escalated_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(100))


class ModelActivation(Base):
    """Each time a version was made active: by whom, how, and the reason typed to override the promotion guard."""

    __tablename__ = "model_activations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    kind: Mapped[ActivationKind] = mapped_column(enum_column(ActivationKind, "ck_model_activations_kind"))
    by: Mapped[str] = mapped_column(String(100), default="")
    # What the guard refused (its message) and the reason given to go ahead anyway; both null when it passed.
    refusal: Mapped[str | None] = mapped_column(Text)
    override_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsoleSession(Base):
    """A console login, kept in a browser cookie (its token's SHA-256 here), so it lasts across reloads and tabs
    until it expires or the moderator logs out."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class ScoringWorker(Base):
    """A scoring process that has loaded its model and can score now: written when its model is warm, refreshed
    while it lives (``seen_at``), removed when it stops. Readiness reads it; nothing depends on it to score."""

    __tablename__ = "scoring_workers"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(200))
    runtime: Mapped[str] = mapped_column(String(32))
    ready_at: Mapped[datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


ACTIVE_RUN = f"status IN ({', '.join(repr(status.value) for status in ACTIVE_RUN_STATUSES)})"


class TrainingRun(Base):
    __tablename__ = "training_runs"
    # One run at a time, even when two requests race past the service's check (migration 0002).
    __table_args__ = (Index("uq_training_runs_one_active", text(f"({ACTIVE_RUN})"), unique=True,
                            sqlite_where=text(ACTIVE_RUN), postgresql_where=text(ACTIVE_RUN)),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    status: Mapped[RunStatus] = mapped_column(enum_column(RunStatus, "ck_training_runs_status"),
                                              default=RunStatus.QUEUED)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    requested_by: Mapped[str] = mapped_column(String(100), default="")
    # The key that requested the run over the API (None: a console user or the CLI); a submitter reads only its own.
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    # The candidate the run registered, once it is done.
    model_version: Mapped[ModelVersion | None] = relationship()


class AuditEvent(Base):
    """One state-changing action: who (a user, a key or the system), when, what, on which object, and the object
    before and after. Written by backend/identity/audit.py in the same transaction as the action; append-only (the ORM
    refuses updates and deletes below, and migration 0005 adds triggers that refuse them in the database)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_object", "object_type", "object_id"),
        Index("ix_audit_events_action_at", "action", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_kind: Mapped[ActorKind] = mapped_column(enum_column(ActorKind, "ck_audit_events_actor_kind"))
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor_name: Mapped[str] = mapped_column(String(100))
    actor_role: Mapped[Role | None] = mapped_column(enum_column(Role, "ck_audit_events_actor_role"))
    # Where the request came from, when known (the console's login form records it).
    address: Mapped[str | None] = mapped_column(String(64))
    # An AuditAction value; text without a CHECK constraint, so a new action needs no migration.
    action: Mapped[str] = mapped_column(String(40))
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str] = mapped_column(String(100))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AppendOnlyError(RuntimeError):
    """Something tried to change or remove an audit event."""


@event.listens_for(AuditEvent, "before_update")
@event.listens_for(AuditEvent, "before_delete")
def _refuse_changing_events(_mapper: Any, _connection: Any, target: AuditEvent) -> None:
    raise AppendOnlyError(f"audit event {target.id} is append-only: it is never updated or deleted")


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_changes_to_events(state: ORMExecuteState) -> None:
    if (state.is_update or state.is_delete) and any(
            mapper.class_ is AuditEvent for mapper in state.all_mappers):
        raise AppendOnlyError("audit events are append-only: no UPDATE or DELETE statement may touch them")
