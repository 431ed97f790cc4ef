"""Process supervision for `fakewatch up`: start each part (API, workers, console) as a child process with its own
log, wait until the API is ready, restart nothing, and stop them all in order when one exits or on Ctrl-C.

The children are `python -m fakewatch.cli <command>` in sessions of their own (a terminal's Ctrl-C reaches only the
supervisor, which stops them in order); on Linux the kernel also ends each child when the supervisor dies
(worker/children.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn, cast

import requests

from worker.children import end_with_parent

STOP_GRACE_S = 30


def port_is_free(host: str, port: int) -> bool:
    """Whether this process could listen on host:port now (another server there would answer in ours' place)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the servers bind: a port left in TIME_WAIT by a stopped server is free, a listening one is not.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError:
        return False
    return True


def spawn(name: str, args: list[str], logs_dir: Path) -> subprocess.Popen[bytes]:
    """Start `fakewatch <args>` as a child writing to logs_dir/<name>.log."""
    log_file = (logs_dir / f"{name}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "fakewatch.cli", *args], stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=end_with_parent)


def spawn_all(commands: Mapping[str, list[str]], logs_dir: Path) -> list[subprocess.Popen[bytes]]:
    """Start every named command (see spawn)."""
    return [spawn(name, args, logs_dir) for name, args in commands.items()]


def wait_until_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout_s: float = 180,
                     also: Callable[[], bool] = lambda: True) -> bool:
    """Poll url/readyz until it answers 200 and ``also()`` holds (a worker can score); False when a child exits
    first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            return False
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200 and also():
                return True
        except requests.RequestException:
            pass
        time.sleep(0.5)
    return False


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each child's main process only: gunicorn's master and Celery's main process stop their own
    workers in order; signalling the whole group at once races them (a Celery pool child killed under its parent's
    warm shutdown left the parent waiting). The group is killed only if that does not end it."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of its session is left
        process.wait()


def supervise(processes: list[subprocess.Popen[bytes]], say: Callable[[str], None]) -> NoReturn:
    """Run until Ctrl-C, SIGTERM or any child's exit, then stop every child and exit 0."""
    def stop(*_args: object) -> NoReturn:
        stop_all(processes)
        say("Stopped.")
        sys.exit(0)

    # Installed explicitly: a shell that starts `fakewatch up` in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while True:
        for process in processes:
            if process.poll() is not None:
                command = " ".join(cast(list[str], process.args))
                say(f"A process exited with code {process.returncode}: {command}; see its log.")
                stop()
        time.sleep(1)
