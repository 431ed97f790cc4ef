"""Every closed set of words fakewatch stores or sends: one ``StrEnum`` each.

The schema stores them (with a database CHECK constraint on each column, see backend/schema.py), the services
compare against them, the API schemas document them and the console and the CLI show them. A member is a ``str``,
so it compares equal to its value and serialises as it. Adding a member means adding it here and writing an
Alembic revision that widens the column's CHECK constraint (backend/migrations/versions/0003_enum_checks.py shows
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
    """What decided a check's verdict (DESIGN.md, "Verdict policy"): a moderator's review of these bytes,
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
