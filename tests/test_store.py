"""The content-addressed image store: keys, atomic writes, idempotence, and keys that must not escape."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from backend.errors import FakewatchError
from backend.settings import Settings
from backend.store import image_path, put_image, read_image, storage_key

BYTES = b"\xff\xd8\xff not really a jpeg, the store does not care"
SHA = hashlib.sha256(BYTES).hexdigest()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def stored_files(settings: Settings) -> list[Path]:
    return sorted(path for path in settings.images_dir.rglob("*") if path.is_file())


def test_put_then_read_round_trips(settings: Settings) -> None:
    key = put_image(BYTES, SHA, settings)

    assert key == f"{SHA[:2]}/{SHA[2:4]}/{SHA}"
    assert read_image(key, settings) == BYTES
    assert image_path(key, settings) == settings.images_dir / SHA[:2] / SHA[2:4] / SHA
    assert stored_files(settings) == [image_path(key, settings)]


def test_putting_the_same_bytes_twice_keeps_one_untouched_file(settings: Settings) -> None:
    key = put_image(BYTES, SHA, settings)
    path = image_path(key, settings)
    os.utime(path, (1_000_000, 1_000_000))

    assert put_image(BYTES, SHA, settings) == key
    assert path.stat().st_mtime == 1_000_000
    assert stored_files(settings) == [path]


def test_stored_file_is_readable_by_other_users(settings: Settings) -> None:
    path = image_path(put_image(BYTES, SHA, settings), settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_bytes_that_do_not_match_the_hash_are_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="do not hash"):
        put_image(BYTES + b"!", SHA, settings)
    assert stored_files(settings) == []


def test_crash_during_rename_leaves_nothing_behind(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(source: str, target: str) -> None:
        raise OSError("disk pulled out")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk pulled out"):
        put_image(BYTES, SHA, settings)

    assert stored_files(settings) == []  # neither the half-written temp file nor a file under the real key
    monkeypatch.undo()
    assert read_image(put_image(BYTES, SHA, settings), settings) == BYTES


def test_concurrent_puts_of_the_same_bytes_agree(settings: Settings) -> None:
    payload = os.urandom(2_000_000)
    digest = hashlib.sha256(payload).hexdigest()
    keys: list[str] = []
    threads = [threading.Thread(target=lambda: keys.append(put_image(payload, digest, settings))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert set(keys) == {storage_key(digest)}
    assert read_image(keys[0], settings) == payload
    assert len(stored_files(settings)) == 1


def test_missing_image_is_not_found(settings: Settings) -> None:
    with pytest.raises(FakewatchError) as caught:
        read_image(storage_key("0" * 64), settings)
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
def test_keys_that_are_not_storage_keys_are_not_found(key: str, settings: Settings) -> None:
    with pytest.raises(FakewatchError) as caught:
        read_image(key, settings)
    assert caught.value.code == "not_found"


@pytest.mark.parametrize("digest", ["abc", SHA.upper(), SHA + "0", "../" + SHA[3:]])
def test_storage_key_wants_a_lowercase_sha256(digest: str) -> None:
    with pytest.raises(FakewatchError):
        storage_key(digest)
