"""The content-addressed image store: original bytes under an images folder (``Settings.images_dir``), named by
their SHA-256.

A storage key is ``ab/cd/abcd...`` (two fan-out levels keep directories small). Files are written to a
temporary file in the target directory and renamed into place, so a crash never leaves half an image under a
real key, and writing the same bytes twice is harmless.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from core.errors import FakewatchError, NotFound

SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
# Keys are checked against this before touching the disk: a key from a URL can never climb out of the store.
KEY_PATTERN = re.compile(r"([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})")


def is_sha256(value: str) -> bool:
    """Whether a string is a SHA-256 as images are named: 64 lowercase hex digits."""
    return SHA256_PATTERN.fullmatch(value) is not None


def storage_key(sha256: str) -> str:
    """The key the bytes with this SHA-256 are stored under."""
    if not is_sha256(sha256):
        raise FakewatchError("not_found", f"{sha256!r} is not a SHA-256 in lowercase hex.", 404)
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


def image_path(storage_key: str, images_dir: Path) -> Path:
    """Where the file for a storage key lives (whether or not it exists yet)."""
    match = KEY_PATTERN.fullmatch(storage_key)
    if not match or not match.group(3).startswith(match.group(1) + match.group(2)):
        raise FakewatchError("not_found", f"{storage_key!r} is not an image storage key.", 404)
    return images_dir / storage_key


def put_image(data: bytes, sha256: str, images_dir: Path) -> str:
    """Store the bytes (atomically, once) and return their storage key."""
    if hashlib.sha256(data).hexdigest() != sha256:
        # A caller bug, not bad input: storing under a wrong name would break content addressing for good.
        raise ValueError(f"put_image: the bytes do not hash to {sha256}")
    key = storage_key(sha256)
    target = image_path(key, images_dir)
    if not target.exists():
        _write_atomically(target, data)
    return key


def read_stored(storage_key: str, images_dir: Path) -> bytes:
    """The stored bytes; NotFound (404) when no image has that key."""
    try:
        return image_path(storage_key, images_dir).read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"No stored image has the key {storage_key}.") from exc


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
