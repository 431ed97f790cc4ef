"""The two ways reading provenance refuses: the input is too big to read at all (the caller's 413), or the
trust anchors it was given are not certificates (an operator's mistake, found when settings are loaded).
Everything wrong inside a file's metadata is a signal instead, never an exception."""

from __future__ import annotations

from core.errors import FakewatchError


class InputTooLarge(FakewatchError):
    status = 413

    def __init__(self, size: int, cap: int) -> None:
        super().__init__("too_large", f"The image is {size} bytes; its metadata (provenance) is read only "
                                      f"from files up to {cap} bytes.")


class TrustAnchorsError(ValueError):
    """The trust-anchor PEM holds no certificate c2pa can load."""
