"""What the API returns, each shape declared once: these schemas serialise the responses (``CheckOut().dump(check)``)
and describe them in the OpenAPI spec (``@bp.output(CheckOut)``); the console and the CLI show the same dumps.

A field reads the attribute of its name by default; a ``Derived*`` field computes its value from the whole object
instead (a check's confidence from its decision, its callback from its delivery), so the rule for each field sits
beside its declaration. A new field of a check is one line here (and, if stored, a column).

Shapes are pure: they read what the service answering the request loaded (a check comes as a
backend.checks.served.ServedCheck, a batch as a BatchSummary) and never query the database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from apiflask import Schema
from marshmallow import fields
from marshmallow.utils import missing

from backend.checks.served import ServedCheck
from backend.checks.verdicts import provenance_of, provenance_summary
from backend.storage.schema import CallbackDelivery, TrainingRun, isoformat_z
from core.enums import BatchStatus, CheckStatus, DeliveryStatus, Label, RunStatus, Source, Verdict, VerdictSource
from core.policy import verdict_wording

# --- field kinds -------------------------------------------------------------------------------------------------


class Timestamp(fields.DateTime):
    """A timestamp as the API writes every one: ISO 8601 in UTC with a ``Z``."""

    def _serialize(self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return isoformat_z(value)


class Choice(fields.Enum):
    """One of core.enums' sets, by value; documented as the list of its values."""

    def __init__(self, enum: type[StrEnum], **kwargs: Any) -> None:
        super().__init__(enum, by_value=True, **kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        # A plain string that names a member (a row written by Core SQL, say) serialises like the member.
        return super()._serialize(None if value is None else self.enum(value), attr, obj, **kwargs)


class _Derived:
    """Mixed into a field kind: the value is ``compute(obj)`` rather than one attribute of ``obj``."""

    def __init__(self, compute: Callable[[Any], Any], *args: Any, **kwargs: Any) -> None:
        self.compute = compute
        super().__init__(*args, **kwargs)

    def get_value(self, obj: Any, attr: str, accessor: Any = None, default: Any = missing) -> Any:
        return self.compute(obj)


class DerivedString(_Derived, fields.String):
    pass


class DerivedFloat(_Derived, fields.Float):
    pass


class DerivedInteger(_Derived, fields.Integer):
    pass


class DerivedNested(_Derived, fields.Nested):
    pass


class DerivedBoolean(_Derived, fields.Boolean):
    pass


class DerivedChoice(_Derived, Choice):
    pass


class DerivedList(_Derived, fields.List):
    pass


def _progress(run: TrainingRun) -> dict[str, Any]:
    return run.progress or {}


def _callback(callback_url: str | None, delivery: CallbackDelivery | None) -> Any:
    """A check's or a batch's callback: its delivery record once one is owed, or the URL it will be posted to."""
    if not callback_url:
        return None
    if delivery is not None:
        return delivery
    # Owed once the object is final: no attempt yet.
    return {"url": callback_url, "status": DeliveryStatus.PENDING, "attempts": 0, "last_status_code": None,
            "last_error": None, "next_attempt_at": None, "last_attempt_at": None, "delivered_at": None}


def _image(served: ServedCheck) -> Any:
    """The image a check was made of, or null once it was deleted (the check and its verdict stay)."""
    check = served.check
    return None if check.image_deleted_at is not None or check.image is None or check.image.deleted_at else check.image


DocResponses = dict[int | str, dict[str, str | dict[str, dict[str, Any]]]]


def response_doc(status: int, description: str, media_types: Iterable[str], schema: Any) -> DocResponses:
    """A response a view sends besides its ``@bp.output`` one (another status, a file, a stream), for ``@bp.doc``."""
    return {status: {"description": description, "content": {media: {"schema": schema} for media in media_types}}}


ERROR_DESCRIPTIONS = {
    400: "The body could not be parsed at all (`invalid_request`)",
    403: "Refused: `blocked_address` (a URL whose address may not be reached) or `forbidden`",
    404: "Not found (`not_found`)",
    409: "Conflicts with the current state",
    413: "Too large (`too_large`, `too_many_pixels`)",
    415: "Not a content type (or image format) accepted here (`unsupported_format`)",
    422: "A field failed validation: a wrong type, a value out of range, a malformed URL or SHA-256",
    429: "Too many requests for this key (`rate_limited`); the Retry-After header says when to try again",
    500: "The server failed on this request (`internal_error`); it was logged",
    503: "A service the request needs is unavailable (`no_active_model`, `broker_unavailable`)",
}


def error_doc(*statuses: int) -> DocResponses:
    """The error responses a view can send, each with the one error body, for ``@bp.doc(responses=...)``."""
    docs: DocResponses = {}
    for status in statuses:
        docs.update(response_doc(status, ERROR_DESCRIPTIONS[status], ["application/json"], ErrorOut))
    return docs


# --- errors ------------------------------------------------------------------------------------------------------


class ErrorDetail(Schema):
    code = fields.String(metadata={"description": "Stable and machine-readable, e.g. `invalid_url`."})
    message = fields.String(metadata={"description": "What went wrong and what to do, for a person."})


class ErrorOut(Schema):
    """Every error, from every endpoint (``{"error": {"code", "message"}}``)."""

    error = fields.Nested(ErrorDetail)


# --- checks ------------------------------------------------------------------------------------------------------


class CallbackOut(Schema):
    """The callback a check or batch is posted with when it finishes, and how its delivery went."""

    url = fields.String()
    status = Choice(DeliveryStatus, metadata={"description": "pending until the receiver answers 2xx (delivered) "
                                                             "or every retry failed (failed)."})
    attempts = fields.Integer()
    last_status_code = fields.Integer(allow_none=True, load_default=None)
    last_error = fields.String(allow_none=True, load_default=None)
    next_attempt_at = Timestamp(allow_none=True)
    last_attempt_at = Timestamp(allow_none=True)
    delivered_at = Timestamp(allow_none=True)


class ImageOut(Schema):
    sha256 = fields.String()
    width = fields.Integer()
    height = fields.Integer()
    format = fields.String()


class ReviewOut(Schema):
    label = Choice(Label)
    by = fields.String(attribute="reviewer")
    at = Timestamp(attribute="created_at")


def _check_error(served: ServedCheck) -> dict[str, str | None] | None:
    check = served.check
    return {"code": check.error_code, "message": check.error_message} if check.error_code else None


class RegionOut(Schema):
    box = fields.List(fields.Integer(), metadata={"description": "[x0, y0, x1, y1] in the image's pixels."})
    score = fields.Float(metadata={"description": "P(fake) of this crop, calibrated like the image's score."})


class FrameOut(Schema):
    """One sampled frame of a video check (docs/video.md)."""

    time_s = fields.Float(metadata={"description": "Where the frame is in the clip, in seconds."})
    score = fields.Float(metadata={"description": "P(fake) of this frame, by the model."})
    verdict = Choice(Verdict, metadata={"description": "The model's verdict on this frame alone (threshold and band)."})
    regions = fields.List(fields.Nested(RegionOut), metadata={"description": "Per-crop scores, in the clip's pixels."})


class MatchOut(Schema):
    sha256 = fields.String(allow_none=True, metadata={"description": "The labelled image this one is a near-copy "
                                                                     "of; null for a hash from a shared list."})
    distance = fields.Integer(metadata={"description": "Hamming distance of their PDQ hashes (of 256 bits); for a "
                                                      "video, the median over its frames."})
    label = Choice(Label, metadata={"description": "That image's latest moderator label."})
    kind = fields.String(load_default="pdq", metadata={"description": "`pdq` (a still) or `vpdq` (a video's frames)."})
    query_matched = fields.Float(metadata={"description": "vPDQ: share of this video's frames that match the other."})
    compared_matched = fields.Float(metadata={"description": "vPDQ: share of the other video's frames matched."})
    by = fields.String(allow_none=True)
    at = fields.String(allow_none=True)
    labels = fields.List(Choice(Label), metadata={"description": "Every label among the near-copies found."})
    pdq_hex = fields.String(metadata={"description": "The PDQ hash matched (64 hex digits)."})
    count = fields.Integer(metadata={"description": "How many labelled near-copies were found."})


class SignalOut(Schema):
    kind = fields.String()
    says = fields.String(allow_none=True, metadata={"description": "ai, edited, capture; null for a reading problem."})
    detail = fields.String()
    source = fields.String()


class ProvenanceOut(Schema):
    c2pa = fields.Dict(allow_none=True, metadata={"description": "Content Credentials: state, signer, claim "
                                                                 "generator, digital source types, summary."})
    signals = fields.List(fields.Nested(SignalOut))
    summary = DerivedString(provenance_summary, metadata={
        "description": 'The evidence in one line, for clients to show ("AI: Content Credentials, OpenAI"); empty '
                       "when the file carries none, which proves nothing (metadata is easily stripped)."})


class CheckOut(Schema):
    """A check, as every endpoint returns it (docs/architecture.md, "JSON shapes")."""

    id = fields.String()
    status = Choice(CheckStatus)
    verdict = DerivedChoice(lambda served: served.decision.verdict, Verdict, allow_none=True)
    score = fields.Float(allow_none=True, metadata={"description": "Probability that the image is fake, by the "
                                                                   "model (always computed, whatever decided)."})
    confidence = DerivedFloat(lambda served: served.decision.confidence, allow_none=True,
                              metadata={"description": "Probability of the verdict's class when the model "
                                                       "decided; null when other evidence did."})
    flagged = DerivedBoolean(lambda served: served.decision.flagged)
    reason = DerivedString(lambda served: served.decision.reason, allow_none=True,
                           metadata={"description": 'Why the verdict is not the evidence\'s plain reading: '
                                                    '"out of scope: ..." for images the model was not made for '
                                                    "(flat or near-empty, tiny, screenshots, drawings, charts, "
                                                    "rendered text); null otherwise."})
    verdict_text = DerivedString(lambda served: verdict_wording(served.decision), allow_none=True,
                                 metadata={"description": 'The verdict in the words clients show: "AI traces '
                                                          'found", "no AI traces found" (never "real": the model '
                                                          "only finds or misses traces), \"uncertain\", or the "
                                                          "out-of-scope reason (docs/detector.md)."})
    verdict_source = DerivedChoice(lambda served: served.decision.source, VerdictSource, allow_none=True,
                                   metadata={"description": "What decided the verdict."})
    cached = fields.Boolean()
    model_version = DerivedString(lambda served: served.check.model_version.name if served.check.model_version
                                  else None, allow_none=True)
    image = DerivedNested(_image, ImageOut, allow_none=True,
                          metadata={"description": "null before a URL is fetched, and once the image was deleted."})
    image_deleted_at = Timestamp(allow_none=True, metadata={"description": "When the image was deleted on request "
                                                                           "or by retention."})
    source = Choice(Source)
    source_url = fields.String(allow_none=True)
    page_url = fields.String(allow_none=True)
    batch_id = fields.String(allow_none=True)
    review = DerivedNested(lambda served: served.review, ReviewOut,
                           allow_none=True, metadata={"description": "The latest moderator label of these bytes."})
    error = DerivedNested(_check_error, ErrorDetail, allow_none=True)
    provenance = DerivedNested(lambda served: provenance_of(served.check.image), ProvenanceOut,
                               metadata={"description": "Evidence read from the file's original bytes."})
    match = fields.Nested(MatchOut, allow_none=True)
    regions = fields.List(fields.Nested(RegionOut), allow_none=True,
                          metadata={"description": "The detector's per-crop scores with their boxes (heat map); "
                                                   "for a video, those of its highest-scoring frame."})
    media = DerivedString(lambda served: served.check.image.media if served.check.image is not None else None,
                          allow_none=True,
                          metadata={"description": "`image` or `video` (a clip, or an animated GIF, WebP or PNG); "
                                                   "null before a URL is fetched."})
    duration_s = DerivedFloat(lambda served: served.check.image.duration_s if served.check.image is not None else None,
                              allow_none=True, metadata={"description": "A video's length in seconds."})
    frames = fields.List(fields.Nested(FrameOut), allow_none=True,
                         metadata={"description": "A video's sampled frames, in time order; its `score` is the mean "
                                                  "of the top quarter of their scores (docs/video.md)."})
    attempts = fields.Integer()
    callback = DerivedNested(lambda served: _callback(served.check.callback_url, served.delivery), CallbackOut,
                             allow_none=True)
    created_at = Timestamp()
    started_at = Timestamp(allow_none=True)
    finished_at = Timestamp(allow_none=True)

    def get_attribute(self, obj: Any, attr: str, default: Any) -> Any:
        """A plain field reads the check's attribute of its name (the derived ones read the whole ServedCheck)."""
        return super().get_attribute(obj.check, attr, default)


# --- near-copies of an image --------------------------------------------------------------------------------------


class CopyOut(Schema):
    """A stored near-copy of an image (dumps a backend.matching.lookups.CopySeen)."""

    sha256 = fields.String(attribute="image.sha256")
    distance = fields.Integer(metadata={"description": "Hamming distance of the two PDQ hashes (of 256 bits)."})
    width = fields.Integer(attribute="image.width")
    height = fields.Integer(attribute="image.height")
    format = fields.String(attribute="image.format")
    first_seen = Timestamp(attribute="image.first_seen")
    label = Choice(Label, allow_none=True, metadata={"description": "Its latest moderator label, if any."})
    checks = fields.Integer(metadata={"description": "How many checks were made of it."})
    sources = fields.List(fields.String(), metadata={"description": "How it arrived (upload, url, extension, batch)."})
    page_urls = fields.List(fields.String(), metadata={"description": "Pages it was seen on (the first 10)."})


class ListedCopyOut(Schema):
    """A hash from an imported hash list near this image (dumps a backend.matching.lookups.LabelledCopy)."""

    pdq_hex = fields.String()
    distance = fields.Integer()
    label = Choice(Label)
    note = fields.String(allow_none=True)
    by = fields.String(metadata={"description": "Who imported it."})


class ImageMatchesOut(Schema):
    """An image's near-copies within the match distance (dumps a backend.matching.lookups.ImageMatches)."""

    sha256 = fields.String()
    pdq_hex = fields.String(allow_none=True, metadata={"description": "Its PDQ hash; null if not hashed yet."})
    pdq_quality = fields.Integer(allow_none=True, metadata={"description": "PDQ quality, 0 to 100."})
    matchable = fields.Boolean(metadata={"description": "False when the hash is missing or too low in quality "
                                                        "(a flat or tiny image): such an image never matches."})
    max_distance = fields.Integer(metadata={"description": "The match distance (FAKEWATCH_MATCH_DISTANCE)."})
    copies = fields.List(fields.Nested(CopyOut))
    listed = fields.List(fields.Nested(ListedCopyOut))


# --- batches -----------------------------------------------------------------------------------------------------


class InvalidLine(Schema):
    line = fields.Integer()
    value = fields.String()
    reason = fields.String()
    code = fields.String(metadata={"description": "An upload batch's refused file: the code a single upload of it "
                                                  "gets (`unsupported_format`, `too_many_pixels`, ...)."})


class BatchOut(Schema):
    """A batch with its items' progress: dumps a backend.batches.progress.BatchSummary."""

    id = fields.String(attribute="batch.id")
    name = fields.String(attribute="batch.name")
    status = Choice(BatchStatus, attribute="batch.status")
    total = fields.Integer(attribute="batch.total", metadata={"description": "Distinct valid URLs, one check each."})
    queued = fields.Integer(attribute="progress.queued")
    running = fields.Integer(attribute="progress.running")
    done = fields.Integer(attribute="progress.done")
    failed = fields.Integer(attribute="progress.failed")
    cancelled = fields.Integer(attribute="progress.cancelled")
    flagged = fields.Integer(attribute="progress.flagged")
    rate_per_s = fields.Float(allow_none=True, metadata={"description": "Items finished per second, recently."})
    eta_s = fields.Float(allow_none=True, metadata={"description": "Estimated seconds until every item is final."})
    invalid = fields.List(fields.Nested(InvalidLine), attribute="batch.invalid")
    callback = DerivedNested(lambda summary: _callback(summary.batch.callback_url, summary.delivery), CallbackOut,
                             allow_none=True)
    created_at = Timestamp(attribute="batch.created_at")
    finished_at = Timestamp(attribute="batch.finished_at", allow_none=True)


class CreatedBatchOut(BatchOut):
    """A batch as its submission answers: with the duplicates folded (dumps a backend.api.batches.Created)."""

    duplicates = fields.Integer(metadata={"description": "Repeated URLs folded into one item."})


class BatchPage(Schema):
    batches = fields.List(fields.Nested(BatchOut))
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()


# --- training runs -----------------------------------------------------------------------------------------------


class CandidateOut(Schema):
    id = fields.Integer()
    name = fields.String()
    active = fields.Boolean()


class ComparedSetOut(Schema):
    name = fields.String()
    count = fields.Integer()
    candidate = fields.Dict(metadata={"description": "The candidate's metrics on this set (empty: not measured)."})
    active = fields.Dict(metadata={"description": "The active version's metrics on this set (empty: none active)."})


class ComparisonOut(Schema):
    active_version = fields.String(allow_none=True)
    candidate_version = fields.String()
    measured_at = fields.String()
    sets = fields.List(fields.Nested(ComparedSetOut))


class RunOut(Schema):
    """A training run as the API returns it and the console shows it."""

    id = fields.String()
    status = Choice(RunStatus)
    phase = DerivedString(lambda run: _progress(run).get("phase"), allow_none=True)
    epoch = DerivedInteger(lambda run: _progress(run).get("epoch", 0))
    epochs = DerivedInteger(lambda run: _progress(run).get("epochs", run.params.get("epochs")), allow_none=True)
    history = DerivedList(lambda run: _progress(run).get("history", []), fields.Dict(),
                          metadata={"description": "One entry per finished epoch: its number and metrics."})
    params = fields.Dict()
    cancel_requested = fields.Boolean()
    error = fields.String(allow_none=True)
    requested_by = fields.String()
    candidate = fields.Nested(CandidateOut, attribute="model_version", allow_none=True)
    comparison = DerivedNested(lambda run: _progress(run).get("comparison"), ComparisonOut, allow_none=True)
    created_at = Timestamp()
    started_at = Timestamp(allow_none=True)
    finished_at = Timestamp(allow_none=True)


class RunList(Schema):
    runs = fields.List(fields.Nested(RunOut))


# --- health ------------------------------------------------------------------------------------------------------


class HealthOut(Schema):
    status = fields.String()


class ReadyOut(Schema):
    status = fields.String(metadata={"description": "`ready`, or `not_ready` with the reasons in `problems`."})
    problems = fields.Dict(keys=fields.String(), values=fields.String())
    model_version = fields.String(allow_none=True)
    workers = fields.Dict(metadata={"description": "With a key: scoring processes seen in the last 20 s (`seen`), "
                                                   "those holding the active model (`ready`) and processes per "
                                                   "version. Not part of the status: workers may be scaled to zero."})


# --- reviews and the review queue ----------------------------------------------------------------------------------


class ReviewRecordOut(Schema):
    """One moderator label of an image, as recorded."""

    id = fields.Integer()
    label = Choice(Label)
    reason = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    by = fields.String(attribute="reviewer")
    at = Timestamp(attribute="created_at")
    check_id = fields.String(allow_none=True)


class ReviewList(Schema):
    sha256 = fields.String()
    reviews = fields.List(fields.Nested(ReviewRecordOut), metadata={"description": "Newest first."})


class QueueItemOut(Schema):
    """An image waiting for a label, through its earliest (or highest-scoring) flagged check."""

    check_id = fields.String()
    sha256 = fields.String()
    width = fields.Integer()
    height = fields.Integer()
    score = fields.Float()
    verdict = Choice(Verdict)
    source = Choice(Source)
    source_url = fields.String(allow_none=True)
    page_url = fields.String(allow_none=True)
    batch_id = fields.String(allow_none=True)
    model_version = fields.String(allow_none=True)
    created_at = Timestamp()


class QueuePage(Schema):
    items = fields.List(fields.Nested(QueueItemOut))
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer(metadata={"description": "Distinct images waiting under these filters."})


# --- model versions ------------------------------------------------------------------------------------------------


class ModelVersionOut(Schema):
    id = fields.Integer()
    name = fields.String()
    architecture = fields.String()
    active = fields.Boolean()
    threshold = fields.Float()
    band = fields.Float()
    metrics = fields.Dict()
    created_at = Timestamp()
    activated_at = Timestamp(allow_none=True)


class ModelVersionList(Schema):
    versions = fields.List(fields.Nested(ModelVersionOut), metadata={"description": "Newest first."})


# --- deletion ------------------------------------------------------------------------------------------------------


class DeletedImageOut(Schema):
    """What a deletion did (dumps a backend.delivery.retention.Deleted)."""

    sha256 = fields.String()
    checks = fields.Integer(metadata={"description": "Checks of the image, kept and now reading `image: null`."})
    purged = fields.Boolean(metadata={"description": "Whether the PDQ hash and labels were removed too."})
    file_removed = fields.Boolean()
