"""The one settings object. Every value comes from a ``FAKEWATCH_*`` environment variable or ``.env``
in the working directory; the defaults are the embedded default (SQLite database, SQLite-backed broker,
everything under ``FAKEWATCH_DATA_DIR``).

There is no process-wide current settings: each entry point reads ``Settings()`` once at its start (the app
factory ``create_app``, the worker's start-up in worker/app.py, the console's in admin/context.py, the ``fakewatch``
command group) and passes the object down; every function that needs a value takes it. Settings are frozen and
hashable, so what is built from them (a database engine, the task sender) is built once per settings value.
Tests build their own ``Settings(...)`` and hand it to the same entry points."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from backend.fetching.allowlist import parse_allowlist
from core.decoding import ImageLimits
from core.video import Sampling, VideoLimits

CommaList = Annotated[tuple[str, ...], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FAKEWATCH_", env_file=".env", extra="ignore", frozen=True)

    data_dir: Path = Path("./var")
    # Empty means "derive from data_dir": the embedded default.
    database_url: str = ""
    broker_url: str = ""

    # Where image bytes and model files live (backend/storage/store.py): empty is folders under data_dir; an
    # S3-compatible bucket is ``s3://bucket/prefix`` with the endpoint (empty: AWS) and credentials below (empty: the
    # usual AWS sources: environment, instance role).
    image_store: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    admin_port: int = 8501
    admin_password: str = ""

    # Client commands (check, scan, retrain) talk to this server with this key.
    api_url: str = ""
    api_key: str = ""

    # Hosts, IPs or CIDRs, each with optional ports (``10.0.0.0/8:8080-8090``), that image fetches and callbacks may
    # reach although they are not public; without a port an entry allows only 80 and 443 (backend/fetching/allowlist.py).
    fetch_allowlist: CommaList = ()
    fetch_connect_timeout_s: float = 5.0
    fetch_timeout_s: float = 20.0
    fetch_max_redirects: int = 3

    # 20 MiB: sizes are written in MiB everywhere (messages, README).
    max_image_bytes: int = 20 * 1024 * 1024
    # Far below Pillow's own 89 MP warning: a decompression bomb is refused from its header alone.
    max_image_pixels: int = 40_000_000

    # Video clips and animations (core/video.py, docs/video.md): each cap refuses with its own error code.
    video_max_bytes: int = 200 * 1024 * 1024
    video_max_duration_s: float = 600.0
    video_max_width: int = 3840  # the long side
    video_max_height: int = 2160  # the short side
    video_max_frames: int = 40_000  # frames decoded, sampled or not
    video_max_decode_s: float = 60.0
    # Sampling: a frame every this many seconds plus scene changes, at most this many frames per clip.
    video_sample_every_s: float = 1.0
    video_max_sampled_frames: int = 64

    # Origins allowed to call the API from a browser, besides browser extensions.
    cors_origins: CommaList = ()
    rate_limit: str = "600 per minute"
    # Where Flask-Limiter keeps its counters; empty means Redis when the broker is Redis, memory otherwise.
    rate_limit_storage_url: str = ""

    # C2PA trust anchors: a PEM file of the certificates whose signatures you trust (empty: trust none, and a valid
    # signature reads "signed by X, not in your trust list"). Read by backend/provenance/intake.py.
    trust_anchors: str = ""

    # Most distinct URLs one batch may hold.
    batch_max_urls: int = 10_000
    # Most files one upload batch (a multipart POST /api/v1/batches) may carry: each is decoded, hashed and stored
    # while the request waits, so this bounds the request's time as MAX_CONTENT_LENGTH bounds its bytes.
    batch_max_files: int = 100

    # Longest ?wait= a client may ask for, and how many requests of one API process may wait at once: past that a
    # POST answers 202 at once with Retry-After, so waiting clients never hold the threads reads need.
    max_wait_s: float = 10.0
    wait_slots: int = 4
    # What a 202 tells the client to wait before it polls (Retry-After, seconds).
    poll_after_s: int = 1

    # Prometheus metrics (backend/checks/metrics.py): GET /metrics on the API port, and a scoring worker's own port
    # (0: none) on this address; log lines as JSON with the request id (``text``: plain lines).
    metrics_enabled: bool = True
    worker_metrics_port: int = 0
    worker_metrics_host: str = "127.0.0.1"
    log_format: str = "json"

    # Worker: processes per scoring worker, images per model call, time limits per task.
    worker_concurrency: int = 1
    score_batch_size: int = 32
    # How long a scoring process's batcher waits for the images of other tasks in flight (worker/batching.py).
    batch_budget_ms: float = 20.0
    # The niceness a scoring process takes when it starts (0 leaves it as started; never lowered): where the API
    # shares the cores, a client's read runs before a batch's next image (docs/serving.md, "Reads under load").
    scoring_nice: int = Field(default=5, ge=0, le=19)
    task_soft_time_limit_s: int = 300
    task_time_limit_s: int = 360
    # Sweeper: checks left queued longer than this are sent again (a lost message).
    stuck_after_s: float = 120.0
    # A worker's claim on a check is a lease it renews every third of this while it works; the sweeper re-queues a
    # running check whose lease lapsed (its worker was killed), within lease_s + sweep_interval_s of the kill.
    lease_s: float = 10.0
    sweep_interval_s: float = 5.0
    max_attempts: int = 3
    # How often a worker polls the embedded broker (SQLite) while it has work, and the longest it waits between polls
    # of an idle queue: producers on the same machine wake it at once (backend/checks/broker.py), so polls are
    # only a fallback.
    broker_poll_interval_s: float = 0.02
    broker_idle_poll_interval_s: float = 1.0

    # Callbacks (backend/delivery/callbacks.py): the waits before each retry of a failed delivery (the default's sum is 84
    # minutes, so a receiver may be down for over an hour). A delivery has the fetcher's timeouts and address guard.
    callback_retry_delays_s: Annotated[tuple[float, ...], NoDecode] = (10, 30, 60, 120, 300, 600, 900, 1200, 1800)

    # Retention (backend/delivery/retention.py): images nobody reviewed are deleted this many days after they were first
    # seen, by the scoring workers' periodic work. None (the default) keeps them.
    retention_days: float | None = None
    retention_interval_s: float = 3600.0

    # Retraining (backend/training/): base dataset folders trained on beside the reviewed images (empty means the
    # datasets the shipped model was trained on, when present), the share of reviewed images held out for the
    # candidate-vs-active comparison, default epochs, and when a silent running run counts as dead.
    training_datasets: CommaList = ()
    training_heldout_percent: int = 20
    training_epochs: int = 5
    training_max_epochs: int = 200
    training_time_limit_s: int = 6 * 3600
    training_stale_after_s: float = 900.0
    # Promotion guard (backend/training/versions.py): a candidate is promoted only when at least this many held-out
    # reviewed images measured it against the active version (and its false-positive rate is no worse); below this
    # count a version's metrics are shown as not comparable.
    promotion_min_heldout: int = 50

    # The console: the reasons a moderator may give with a decision (policy categories), how long a login lasts
    # across reloads and tabs (backend/identity/sessions.py).
    review_reasons: CommaList = ("AI-generated", "face swap", "edited or composited", "genuine photo",
                                 "art or satire", "not enough to tell")
    console_session_hours: float = 12.0

    # The console's login limiter (backend/identity/logins.py), per user name and per address: after
    # ``login_delay_after_failures`` failures each further attempt waits twice as long as the last (from
    # ``login_delay_base_s``); after ``login_lockout_failures`` the name or address is locked for ``login_lockout_s``.
    # Failures count since the last successful login, within ``login_failure_window_s``.
    login_delay_after_failures: int = 3
    login_delay_base_s: float = 1.0
    login_lockout_failures: int = 10
    login_lockout_s: float = 900.0
    login_failure_window_s: float = 3600.0

    # Near-duplicate matching (backend/matching/lookups.py): two PDQ hashes at most this many bits apart (of 256) are
    # near-copies; PDQ's own threshold is 31. Hashes under the quality floor never match. A process's index picks up
    # new images before each lookup and reloads everything from the database at most this often (hashes written
    # to old rows, by `fakewatch hashes backfill`, arrive through the reload).
    match_distance: int = Field(default=31, ge=0, le=256)
    match_min_quality: int = Field(default=50, ge=0, le=100)
    match_reload_s: float = 600.0

    @field_validator("fetch_allowlist", "cors_origins", "training_datasets", "review_reasons", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("callback_retry_delays_s", mode="before")
    @classmethod
    def _delays(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("retention_days", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("fetch_allowlist")
    @classmethod
    def _readable_allowlist(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_allowlist(value)  # a ValueError names the entry that cannot be read
        return value

    @property
    def image_limits(self) -> ImageLimits:
        """The caps untrusted bytes (uploads, fetched URLs, stored images) are decoded under."""
        return ImageLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)

    @property
    def video_limits(self) -> VideoLimits:
        return VideoLimits(max_bytes=self.video_max_bytes, max_duration_s=self.video_max_duration_s,
                           max_width=self.video_max_width, max_height=self.video_max_height,
                           max_frames=self.video_max_frames, max_decode_s=self.video_max_decode_s)

    @property
    def video_sampling(self) -> Sampling:
        return Sampling(every_s=self.video_sample_every_s, max_frames=self.video_max_sampled_frames)

    @property
    def max_upload_bytes(self) -> int:
        """The largest body worth reading: a still's cap or a clip's, whichever is larger."""
        return max(self.max_image_bytes, self.video_max_bytes)

    @property
    def data_path(self) -> Path:
        # Not a cached_property: pydantic's model_copy(update=...) copies a cached value along with the fields, so
        # a copy with another data_dir or database_url would keep answering with the original's.
        return self.data_dir.resolve()

    @property
    def images_dir(self) -> Path:
        return self.data_path / "images"

    @property
    def models_dir(self) -> Path:
        return self.data_path / "models"

    @property
    def logs_dir(self) -> Path:
        return self.data_path / "logs"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'fakewatch.db'}"

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_path / 'broker.db'}"

    @property
    def broker_is_redis(self) -> bool:
        return self.broker.startswith(("redis://", "rediss://"))

    @property
    def rate_limit_storage(self) -> str:
        if self.rate_limit_storage_url:
            return self.rate_limit_storage_url
        return self.broker if self.broker_is_redis else "memory://"

    @property
    def api_base_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"
