"""The SQLAlchemy schema: the database is the source of truth for every check's state.

Every column holding one of core.enums' sets is an ``enum_column``: stored as its text, refused by a CHECK
constraint when it is not a member (migration 0003), and read back as the enum member. Changes go through Alembic
revisions in backend/migrations/versions/."""

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
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.enums import (
    ACTIVE_RUN_STATUSES,
    ActivationKind,
    BatchStatus,
    CheckStatus,
    Label,
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
    # Evidence read from the original bytes once, whatever the model version (DESIGN.md's check "provenance").
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # PDQ perceptual hash (64 hex digits) and its quality (0-100), for near-duplicate matching.
    pdq_hex: Mapped[str | None] = mapped_column(String(64))
    pdq_quality: Mapped[int | None] = mapped_column(Integer)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the key: keys are 256-bit random tokens, so a fast hash is enough to make a stolen table useless.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Check(Base):
    __tablename__ = "checks"
    __table_args__ = (
        Index("ix_checks_status_queued_at", "status", "queued_at"),
        Index("ix_checks_image_model", "image_id", "model_version_id"),
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
    # The labelled near-duplicate that decided (or was weighed): DESIGN.md's "match", plus every label seen.
    match: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The detector's per-crop scores with their boxes: [{"box": [x0, y0, x1, y1], "score": 0.8}, ...].
    regions: Mapped[list[Any] | None] = mapped_column(JSON)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the check was last handed to the broker; the sweeper re-queues checks that sat too long.
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    image: Mapped[Image | None] = relationship(lazy="joined")
    model_version: Mapped[ModelVersion | None] = relationship(lazy="joined")


class User(Base):
    """A moderator of the admin console."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
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
    note: Mapped[str | None] = mapped_column(Text)
    # A policy category from FAKEWATCH_REVIEW_REASONS, beside the free note (migration 0006).
    reason: Mapped[str | None] = mapped_column(String(100))
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
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    # The candidate the run registered, once it is done.
    model_version: Mapped[ModelVersion | None] = relationship()
