"""The content-addressed image store (original bytes named by their SHA-256) and the object store it sits on.

Two backends keep the same promises, chosen by one setting (``FAKEWATCH_IMAGE_STORE``):

- a folder (the embedded default: ``Settings.images_dir`` for images, ``Settings.models_dir`` for model files);
- an S3-compatible bucket (``s3://bucket/prefix``, with ``FAKEWATCH_S3_ENDPOINT_URL`` and credentials), so the API
  hosts and the workers share nothing but the database, the broker and the bucket.

An image's storage key is ``ab/cd/abcd...`` (two fan-out levels keep directories small). A write never leaves half
an object under a real key: the folder writes a temporary file and renames it into place, and an S3 PUT is atomic
by the protocol (the object appears whole or not at all). Writing the same bytes twice is harmless on both.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from core.errors import FakewatchError, NotFound

if TYPE_CHECKING:
    from backend.settings import Settings

SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
# Keys are checked against this before touching the disk: a key from a URL can never climb out of the store.
KEY_PATTERN = re.compile(r"([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})")
# Any other key (model files: ``<version name>/<file name>``): plain names, no "..", no leading slash.
OBJECT_KEY_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*(/[A-Za-z0-9_][A-Za-z0-9_.+-]*)*")
IMAGES, MODELS = "images", "models"


class ObjectStore(Protocol):
    """Bytes under keys. ``put`` is atomic and idempotent; ``read`` raises NotFound for a missing key."""

    def put(self, key: str, data: bytes) -> None: ...
    def read(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> bool: ...
    def location(self, key: str) -> str: ...
    @property
    def is_local(self) -> bool: ...


def checked_key(key: str) -> str:
    if ".." in key.split("/") or not OBJECT_KEY_PATTERN.fullmatch(key):
        raise FakewatchError("not_found", f"{key!r} is not a storage key.", 404)
    return key


@dataclass(frozen=True)
class FolderStore:
    """Objects as files under one folder."""

    root: Path

    @property
    def is_local(self) -> bool:
        return True

    def path(self, key: str) -> Path:
        return self.root / checked_key(key)

    def put(self, key: str, data: bytes) -> None:
        target = self.path(key)
        if not target.exists():
            _write_atomically(target, data)

    def read(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"Nothing is stored under the key {key}.") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> bool:
        path = self.path(key)
        removed = path.exists()
        path.unlink(missing_ok=True)
        return removed

    def location(self, key: str) -> str:
        return str(self.path(key))


@dataclass(frozen=True)
class S3Store:
    """Objects in an S3-compatible bucket, under ``prefix/``. The client (boto3, imported only when a bucket is
    configured) is thread-safe and made once per process."""

    bucket: str
    prefix: str
    client: Any

    @property
    def is_local(self) -> bool:
        return False

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{checked_key(key)}" if self.prefix else checked_key(key)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def read(self, key: str) -> bytes:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise NotFound(f"Nothing is stored under the key {key}.") from exc
        return body

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError  # noqa: PLC0415 - boto3 only where a bucket is configured

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def delete(self, key: str) -> bool:
        present = self.exists(key)
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        return present

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def parse_store_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, prefix); a ValueError says what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"FAKEWATCH_IMAGE_STORE must be empty (a folder under the data dir) or s3://bucket/prefix, "
                         f"not {url!r}")
    return parts.netloc, parts.path.strip("/")


def open_store(settings: Settings, area: str) -> ObjectStore:
    """The store for ``images`` or ``models`` under these settings (made once per process and settings value)."""
    return _open_store(settings, area, os.getpid())


@functools.lru_cache(maxsize=32)
def _open_store(settings: Settings, area: str, _pid: int) -> ObjectStore:
    # Keyed by the process id too: a client made before a fork (gunicorn, Celery prefork) is not reused after it.
    if not settings.image_store:
        return FolderStore(settings.images_dir if area == IMAGES else settings.models_dir)
    bucket, prefix = parse_store_url(settings.image_store)
    return S3Store(bucket, f"{prefix}/{area}" if prefix else area, s3_client(settings))


def s3_client(settings: Settings) -> Any:
    import boto3  # noqa: PLC0415 - only where a bucket is configured
    from botocore.config import Config  # noqa: PLC0415

    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint_url or None, region_name=settings.s3_region or None,
        aws_access_key_id=settings.s3_access_key_id or None, aws_secret_access_key=settings.s3_secret_access_key or None,
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"},
                      s3={"addressing_style": "path"}, max_pool_connections=32),
    )


def image_store(settings: Settings) -> ObjectStore:
    return open_store(settings, IMAGES)


def is_sha256(value: str) -> bool:
    """Whether a string is a SHA-256 as images are named: 64 lowercase hex digits."""
    return SHA256_PATTERN.fullmatch(value) is not None


def storage_key(sha256: str) -> str:
    """The key the bytes with this SHA-256 are stored under."""
    if not is_sha256(sha256):
        raise FakewatchError("not_found", f"{sha256!r} is not a SHA-256 in lowercase hex.", 404)
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


def _checked_image_key(storage_key: str) -> str:
    match = KEY_PATTERN.fullmatch(storage_key)
    if not match or not match.group(3).startswith(match.group(1) + match.group(2)):
        raise FakewatchError("not_found", f"{storage_key!r} is not an image storage key.", 404)
    return storage_key


def image_path(storage_key: str, images_dir: Path) -> Path:
    """Where the file for a storage key lives in a folder store (whether or not it exists yet)."""
    return images_dir / _checked_image_key(storage_key)


def _as_store(images: ObjectStore | Path) -> ObjectStore:
    return FolderStore(images) if isinstance(images, Path) else images


def put_image(data: bytes, sha256: str, images: ObjectStore | Path) -> str:
    """Store the bytes (atomically, once) and return their storage key."""
    if hashlib.sha256(data).hexdigest() != sha256:
        # A caller bug, not bad input: storing under a wrong name would break content addressing for good.
        raise ValueError(f"put_image: the bytes do not hash to {sha256}")
    key = storage_key(sha256)
    _as_store(images).put(key, data)
    return key


def read_stored(storage_key: str, images: ObjectStore | Path) -> bytes:
    """The stored bytes; NotFound (404) when no image has that key."""
    try:
        return _as_store(images).read(_checked_image_key(storage_key))
    except NotFound as exc:
        raise NotFound(f"No stored image has the key {storage_key}.") from exc


def delete_stored(storage_key: str, images: ObjectStore | Path) -> bool:
    """Remove an image's bytes; whether there were any."""
    return _as_store(images).delete(_checked_image_key(storage_key))


def local_copy(storage_key: str, images: ObjectStore, cache_dir: Path) -> Path:
    """A file holding the image's bytes, for code that reads paths (training): the file itself in a folder store,
    a verified copy under ``cache_dir`` otherwise."""
    key = _checked_image_key(storage_key)
    if isinstance(images, FolderStore):
        return images.path(key)
    target = cache_dir / key
    if not target.is_file():
        data = images.read(key)
        if hashlib.sha256(data).hexdigest() != key.rsplit("/", 1)[-1]:
            raise FakewatchError("store_corrupt", f"The stored bytes under {key} do not match their SHA-256.", 500)
        _write_atomically(target, data)
    return target


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        # mkstemp makes the file private (0600); the API and worker may run as different users in production.
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_atomically(target: Path, data: bytes) -> None:
    """Write a file so that it appears whole or not at all (a temporary file renamed into place)."""
    _write_atomically(target, data)
