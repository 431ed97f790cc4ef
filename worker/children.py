"""Child processes started by fakewatch's long-lived processes (`fakewatch up`'s parts, a training run's trainer)
end with the process that started them, however it ends."""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def end_with_parent() -> None:
    """In the child, before exec: the kernel sends it SIGTERM when its parent dies, however it dies (SIGKILL
    included), so no child outlives its supervisor. Linux only; elsewhere the parent's own handlers stop it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
