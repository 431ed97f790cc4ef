"""Local wake-ups: a process that waits for something another process on the same machine does (a worker for a
message on the embedded broker) binds a Unix datagram socket in a folder both know, and whoever does it sends an
empty datagram to every socket there. The datagram carries nothing; it only says "look now". Whoever waits still
looks on its own from time to time, so a lost wake-up (a full socket buffer, a folder the sender cannot see) costs
time, never a message.

A socket's name is its process id and a random part, so a new process that reuses a dead one's id never takes its
name; the sockets of processes that died without removing theirs are removed by the next sender (the kernel
refuses a datagram to a socket nobody holds)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import select
import socket
import threading
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("fakewatch.wakeups")

SUFFIX = ".sock"
# sockaddr_un's sun_path is 108 bytes on Linux, the final NUL included.
MAX_SOCKET_PATH = 107


class WakeSocket:
    """This process's socket in ``folder``: readable once someone sent a wake-up since the last ``drain``."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        try:
            self.sock.bind(str(self.path))
        except OSError:
            self.sock.close()
            raise

    @classmethod
    def bind(cls, folder: Path) -> WakeSocket | None:
        """A bound socket, or None where none can be made (a path too long for a socket, a folder that cannot be
        created): the caller then relies on its own polling."""
        if len(os.fsencode(folder)) + 30 > MAX_SOCKET_PATH:
            log.info("no wake-up socket: the folder's path is too long for a Unix socket (%s)", folder)
            return None
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            return cls(folder)
        except OSError as error:
            log.info("no wake-up socket in %s: %s", folder, error)
            return None

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> int:
        """Read every wake-up waiting; returns how many."""
        count = 0
        while True:
            try:
                self.sock.recv(16)
            except (BlockingIOError, InterruptedError):
                return count
            count += 1

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def wake_all(folder: Path) -> int:
    """Send a wake-up to every socket in ``folder`` (none when it does not exist); never blocks, never raises.
    Returns how many sockets took it."""
    try:
        entries = [entry.path for entry in os.scandir(folder) if entry.name.endswith(SUFFIX)]
    except OSError:
        return 0
    woken = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for path in entries:
            try:
                sender.sendto(b"w", path)
                woken += 1
            except BlockingIOError:
                woken += 1  # its buffer is full of wake-ups it has not read yet: it is awake already
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):  # its process died without removing it
                    os.unlink(path)
            except OSError:
                pass
    return woken


class Bell:
    """Wake-ups for threads: one listening thread per process reads its socket and counts the wake-ups; a thread
    that waits for something (``wait``) returns as soon as the count moves, or at its timeout."""

    def __init__(self, wakes: WakeSocket) -> None:
        self.rung = 0
        self._wakes = wakes
        self._changed = threading.Condition()
        threading.Thread(target=self._listen, name="fakewatch-wakeups", daemon=True).start()
        atexit.register(wakes.close)

    def _listen(self) -> None:
        while True:
            try:
                select.select([self._wakes], [], [])
            except (OSError, ValueError):  # closed at exit
                return
            if self._wakes.drain():
                with self._changed:
                    self.rung += 1
                    self._changed.notify_all()

    def wait(self, seen: int, timeout_s: float) -> int:
        """Until the count is no longer ``seen`` (at once if it moved already) or ``timeout_s``; returns it."""
        with self._changed:
            self._changed.wait_for(lambda: self.rung != seen, timeout_s)
            return self.rung


@lru_cache(maxsize=4)
def bell(folder: Path) -> Bell | None:
    """This process's bell in ``folder``, made on first use; None where no socket can be bound there."""
    wakes = WakeSocket.bind(folder)
    return Bell(wakes) if wakes is not None else None
