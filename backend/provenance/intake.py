"""An image's provenance, read once from its original bytes when it is first stored (an upload at intake, a
fetched URL in the worker), before anything decodes or re-encodes them, and kept on its row
(``images.provenance``). It does not depend on the model version, so it is never read again for the same bytes.

Reading never fails a check: whatever is wrong inside the metadata is a signal that says nothing (the reader's
own rule), and an unexpected error in the reader is recorded the same way, so the model still scores the image.
The trust anchors come from ``FAKEWATCH_TRUST_ANCHORS`` (a PEM file), checked when the API and workers start.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from backend.provenance import (
    InputTooLarge,
    Provenance,
    ProvenanceLimits,
    Signal,
    TrustAnchorsError,
    check_trust_anchors,
    read_provenance,
)
from backend.provenance.video_tags import tag_fields
from backend.settings import Settings

log = logging.getLogger("fakewatch.provenance")


class TrustAnchorsSettingError(ValueError):
    """``FAKEWATCH_TRUST_ANCHORS`` names a file that cannot be read or holds no certificates."""


def load_trust_anchors(settings: Settings) -> str | None:
    """The trust-anchor PEM the settings name (None when none is set); raises TrustAnchorsSettingError, naming the
    setting, when the file is missing or is not certificates. Entry points call it at start-up, so a mistyped path
    stops the process instead of silently trusting nobody."""
    if not settings.trust_anchors.strip():
        return None
    path = Path(settings.trust_anchors).expanduser()
    try:
        stat = path.stat()
    except OSError as exc:
        raise TrustAnchorsSettingError(f"FAKEWATCH_TRUST_ANCHORS: cannot read {path}: {exc.strerror}") from exc
    return _read_anchors(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _read_anchors(path: str, _mtime_ns: int, _size: int) -> str:
    """The file's PEM, validated; cached per version of the file (its mtime and size are part of the key)."""
    try:
        pem = Path(path).read_text(encoding="ascii")
        count = check_trust_anchors(pem)
    except (OSError, UnicodeDecodeError, TrustAnchorsError) as exc:
        raise TrustAnchorsSettingError(f"FAKEWATCH_TRUST_ANCHORS: {path}: {exc}") from exc
    if count == 0:
        raise TrustAnchorsSettingError(f"FAKEWATCH_TRUST_ANCHORS: {path} holds no certificates.")
    return pem


def read_image_provenance(data: bytes, settings: Settings, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """The provenance to store for these original bytes, as ``Provenance.to_dict()``.

    Raises InputTooLarge (413 ``too_large``) only for bytes over the upload cap, which intake refuses first."""
    limits = ProvenanceLimits(max_input_bytes=settings.max_upload_bytes)
    notes: list[Signal] = []
    try:
        anchors = load_trust_anchors(settings)
    except TrustAnchorsSettingError as error:
        # The file changed under a running process: read without anchors (no signer is trusted, so nothing is
        # cleared by it) and say so on the image, rather than fail the check.
        log.error("%s; reading provenance without trust anchors", error)
        anchors = None
        notes.append(Signal("trust_anchors", None, "signer trust not checked: the trust anchors could not be read",
                            "settings"))
    try:
        provenance = read_provenance(data, trust_anchors_pem=anchors, limits=limits,
                                     extra_fields=tag_fields(tags or {}))
    except InputTooLarge:
        raise
    except Exception as error:  # metadata must never fail a check; the model still scores it
        log.exception("reading provenance failed")
        provenance = Provenance(signals=(Signal("unreadable", None,
                                                f"metadata could not be read ({type(error).__name__})", "reader"),))
    if notes:
        provenance = Provenance(c2pa=provenance.c2pa, signals=provenance.signals + tuple(notes))
    return provenance.to_dict()
