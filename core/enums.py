"""Every closed set of words fakewatch stores or sends: one ``StrEnum`` each.

The schema stores them (with a database CHECK constraint on each column, see backend/storage/schema.py), the services
compare against them, the API schemas document them and the console and the CLI show them. A member is a ``str``,
so it compares equal to its value and serialises as it. Adding a member means adding it here and writing an
Alembic revision that widens the column's CHECK constraint (backend/storage/migrations/versions/0003_enum_checks.py shows
how)."""

from __future__ import annotations

from enum import StrEnum


class CheckStatus(StrEnum):
    """A check moves forward only: queued -> running -> done | failed, or queued -> cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_CHECK_STATUSES


FINAL_CHECK_STATUSES: tuple[CheckStatus, ...] = (CheckStatus.DONE, CheckStatus.FAILED, CheckStatus.CANCELLED)
# Not final: a worker still owes these checks a result.
PENDING_CHECK_STATUSES: tuple[CheckStatus, ...] = (CheckStatus.QUEUED, CheckStatus.RUNNING)


class BatchStatus(StrEnum):
    """queued until one of its items starts, running until every item is final, then done; or cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (BatchStatus.DONE, BatchStatus.CANCELLED)


class RunStatus(StrEnum):
    """A training run: queued -> running -> done | failed | cancelled (or cancelled while still queued)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_RUN_STATUSES


# At most one run is active at a time (a partial unique index enforces it: migration 0002).
ACTIVE_RUN_STATUSES: tuple[RunStatus, ...] = (RunStatus.QUEUED, RunStatus.RUNNING)


class Verdict(StrEnum):
    """What a check concludes about an image; in this order on every chart (real to fake)."""

    REAL = "real"
    UNCERTAIN = "uncertain"
    FAKE = "fake"

    @property
    def is_flagged(self) -> bool:
        """Fake and uncertain verdicts go to the review queue."""
        return self in FLAGGED_VERDICTS


FLAGGED_VERDICTS: tuple[Verdict, ...] = (Verdict.FAKE, Verdict.UNCERTAIN)


class VerdictSource(StrEnum):
    """What decided a check's verdict (docs/architecture.md, "Verdict rules"): a moderator's review of these bytes,
    provenance in the file's metadata, a near-duplicate of a labelled image, or the model's score."""

    MODEL = "model"
    PROVENANCE = "provenance"
    MATCH = "match"
    REVIEW = "review"


class Label(StrEnum):
    """A moderator's review of an image, and the class a training item belongs to."""

    REAL = "real"
    FAKE = "fake"

    @property
    def target(self) -> int:
        """The training target: 0 for real, 1 for fake (what the models' output means by P(fake))."""
        return 1 if self is Label.FAKE else 0


class Source(StrEnum):
    """How a check arrived."""

    UPLOAD = "upload"
    URL = "url"
    EXTENSION = "extension"
    BATCH = "batch"


# What an uploaded image may say it came from (a URL check or a batch item is never uploaded).
UPLOAD_SOURCES: tuple[Source, ...] = (Source.UPLOAD, Source.EXTENSION)


class ActivationKind(StrEnum):
    """How a model version became active: promoted (a candidate, through the promotion guard) or rolled back to
    (a version that was active before)."""

    PROMOTE = "promote"
    ROLL_BACK = "roll_back"
class DeliveryStatus(StrEnum):
    """A callback delivery: pending (its next attempt is due at ``next_attempt_at``) until the receiver answers 2xx
    (delivered) or every retry has failed (failed)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Role(StrEnum):
    """Who a key or a console user is (docs/architecture.md, "Roles and permissions"); what each may do is
    backend/identity/access.py's table."""

    SUBMITTER = "submitter"
    VIEWER = "viewer"
    MODERATOR = "moderator"
    ADMIN = "admin"


# Console users read and act on everything; submitting and reading one's own work is for API keys.
USER_ROLES: tuple[Role, ...] = (Role.VIEWER, Role.MODERATOR, Role.ADMIN)


class Permission(StrEnum):
    """Something a role may or may not do; backend/identity/access.py says which roles may."""

    SUBMIT = "submit"              # checks and batches
    READ_ALL = "read_all"          # every key's checks, batches, runs and images (a submitter reads its own)
    CANCEL_BATCH = "cancel_batch"  # a submitter cancels its own batches only
    LABEL = "label"                # reviews: label and undo
    ESCALATE = "escalate"
    TRAIN = "train"                # start and cancel training runs
    PROMOTE = "promote"            # promote and roll back model versions
    DELETE = "delete"              # images deleted on request
    MANAGE_KEYS = "manage_keys"
    MANAGE_USERS = "manage_users"
    CHANGE_SETTINGS = "change_settings"
    READ_AUDIT = "read_audit"


class ActorKind(StrEnum):
    """Who did something, as the audit trail records it: a console user, an API key, the operator's own command
    line and fakewatch itself (``system``), or someone not logged in (a failed login: ``anonymous``, no role)."""

    USER = "user"
    KEY = "key"
    SYSTEM = "system"
    ANONYMOUS = "anonymous"


class AuditAction(StrEnum):
    """What an audit event records. Stored as text without a CHECK constraint, so that a new action needs a member
    here and no migration (events already written keep their words)."""

    LABEL = "review.label"
    UNDO = "review.undo"
    ESCALATE = "check.escalate"
    PROMOTE = "model.promote"
    ROLL_BACK = "model.roll_back"
    TRAINING_START = "training.start"
    TRAINING_CANCEL = "training.cancel"
    BATCH_CANCEL = "batch.cancel"
    KEY_CREATE = "key.create"
    KEY_REVOKE = "key.revoke"
    KEY_ROTATE_SECRET = "key.rotate_secret"
    KEY_SET_CALLBACK = "key.set_callback"
    USER_CREATE = "user.create"
    USER_REVOKE = "user.revoke"
    DELETE = "image.delete"
    PURGE = "image.purge"
    RETENTION_DELETE = "image.retention_delete"
    SETTING_CHANGE = "setting.change"
    LOGIN = "login.succeeded"
    LOGIN_FAILED = "login.failed"
    LOGIN_THROTTLED = "login.throttled"
