"""The content-addressed image store: keys, atomic writes, idempotence, and keys that must not escape."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from backend.storage.store import image_path, put_image, read_stored, storage_key
from core.errors import FakewatchError

BYTES = b"\xff\xd8\xff not really a jpeg, the store does not care"
SHA = hashlib.sha256(BYTES).hexdigest()


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    return tmp_path / "images"


def stored_files(images_dir: Path) -> list[Path]:
    return sorted(path for path in images_dir.rglob("*") if path.is_file())


def test_put_then_read_round_trips(images_dir: Path) -> None:
    key = put_image(BYTES, SHA, images_dir)

    assert key == f"{SHA[:2]}/{SHA[2:4]}/{SHA}"
    assert read_stored(key, images_dir) == BYTES
    assert image_path(key, images_dir) == images_dir / SHA[:2] / SHA[2:4] / SHA
    assert stored_files(images_dir) == [image_path(key, images_dir)]


def test_putting_the_same_bytes_twice_keeps_one_untouched_file(images_dir: Path) -> None:
    key = put_image(BYTES, SHA, images_dir)
    path = image_path(key, images_dir)
    os.utime(path, (1_000_000, 1_000_000))

    assert put_image(BYTES, SHA, images_dir) == key
    assert path.stat().st_mtime == 1_000_000
    assert stored_files(images_dir) == [path]


def test_stored_file_is_readable_by_other_users(images_dir: Path) -> None:
    path = image_path(put_image(BYTES, SHA, images_dir), images_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_bytes_that_do_not_match_the_hash_are_refused(images_dir: Path) -> None:
    with pytest.raises(ValueError, match="do not hash"):
        put_image(BYTES + b"!", SHA, images_dir)
    assert stored_files(images_dir) == []


def test_crash_during_rename_leaves_nothing_behind(images_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(source: str, target: str) -> None:
        raise OSError("disk pulled out")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk pulled out"):
        put_image(BYTES, SHA, images_dir)

    assert stored_files(images_dir) == []  # neither the half-written temp file nor a file under the real key
    monkeypatch.undo()
    assert read_stored(put_image(BYTES, SHA, images_dir), images_dir) == BYTES


def test_concurrent_puts_of_the_same_bytes_agree(images_dir: Path) -> None:
    payload = os.urandom(2_000_000)
    digest = hashlib.sha256(payload).hexdigest()
    keys: list[str] = []
    threads = [threading.Thread(target=lambda: keys.append(put_image(payload, digest, images_dir))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert set(keys) == {storage_key(digest)}
    assert read_stored(keys[0], images_dir) == payload
    assert len(stored_files(images_dir)) == 1


def test_missing_image_is_not_found(images_dir: Path) -> None:
    with pytest.raises(FakewatchError) as caught:
        read_stored(storage_key("0" * 64), images_dir)
    assert (caught.value.code, caught.value.status) == ("not_found", 404)


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        f"{SHA[:2]}/{SHA[2:4]}/../../../{SHA}",
        f"/{SHA[:2]}/{SHA[2:4]}/{SHA}",
        f"{SHA[:2]}/{SHA[2:4]}/{SHA}/",
        f"{SHA[:2].upper()}/{SHA[2:4]}/{SHA}",
        f"00/00/{SHA}",  # the fan-out does not match the name
        SHA,
        "",
    ],
)
def test_keys_that_are_not_storage_keys_are_not_found(key: str, images_dir: Path) -> None:
    with pytest.raises(FakewatchError) as caught:
        read_stored(key, images_dir)
    assert caught.value.code == "not_found"


@pytest.mark.parametrize("digest", ["abc", SHA.upper(), SHA + "0", "../" + SHA[3:]])
def test_storage_key_wants_a_lowercase_sha256(digest: str) -> None:
    with pytest.raises(FakewatchError):
        storage_key(digest)
