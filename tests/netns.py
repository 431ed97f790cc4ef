"""A small private network for the multi-host test: one network namespace per host, each joined by a veth pair
to a bridge that lives in a namespace of its own, on a test subnet (10.213.N.0/24) no one else uses. Nothing is
added to the machine's own namespace but the namespaces' names; :meth:`PrivateNetwork.remove` deletes everything.

The test process reaches the hosts from a thread that has entered one host's namespace (``setns`` applies to the
calling thread only), so its sockets live on that host like any process there."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


class NamespacesUnavailable(RuntimeError):
    pass


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if result.returncode != 0:
        raise NamespacesUnavailable(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")


@dataclass
class PrivateNetwork:
    """Hosts by name, each with an address on the subnet; ``bridge`` is the namespace holding the bridge."""

    tag: str
    subnet: str
    hosts: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _threads: list[ThreadPoolExecutor] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"fw{self.tag}-br"

    def ns(self, host: str) -> str:
        return f"fw{self.tag}-{host}"

    def address(self, host: str) -> str:
        return self.hosts[host]

    def add_host(self, host: str, octet: int) -> str:
        ns, address = self.ns(host), f"{self.subnet}.{octet}"
        outer, inner = f"v{self.tag}{octet}b", f"v{self.tag}{octet}h"
        _ip("netns", "add", ns)
        self.hosts[host] = address
        _ip("link", "add", outer, "netns", self.bridge, "type", "veth", "peer", "name", inner, "netns", ns)
        _ip("-n", self.bridge, "link", "set", outer, "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        return address

    def start(self, host: str, command: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path
              ) -> subprocess.Popen[bytes]:
        """Run a command on a host: in its network namespace and a UTS namespace named after it (so
        ``socket.gethostname()`` says which host did the work), in its own process group (to kill the host)."""
        wrapped = ["ip", "netns", "exec", self.ns(host), "unshare", "--uts", "sh", "-c",
                   f'hostname {host} && exec "$@"', "sh", *command]
        process = subprocess.Popen(wrapped, env=dict(env), cwd=cwd, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def on(self, host: str) -> ThreadPoolExecutor:
        """An executor whose one thread lives in this host's network namespace."""
        path = f"/run/netns/{self.ns(host)}"

        def enter() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(path) as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise NamespacesUnavailable(f"setns({path}): {os.strerror(ctypes.get_errno())}")

        executor = ThreadPoolExecutor(max_workers=1, initializer=enter)
        self._threads.append(executor)
        return executor

    def remove(self) -> None:
        """Kill every process started here, then delete the namespaces (their veths and the bridge go with them)."""
        for process in self.processes:
            kill_group(process)
        for executor in self._threads:
            executor.shutdown(wait=False, cancel_futures=True)
        for ns in [self.ns(host) for host in self.hosts] + [self.bridge]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


def build_network(hosts: Mapping[str, int]) -> PrivateNetwork:
    """The bridge and one namespace per host (host name -> last octet). NamespacesUnavailable says why not."""
    if os.geteuid() != 0:
        raise NamespacesUnavailable("creating network namespaces needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN)")
    tag = f"{random.randrange(16**4):04x}"
    network = PrivateNetwork(tag=tag, subnet=f"10.213.{random.randrange(1, 250)}")
    try:
        _ip("netns", "add", network.bridge)
        _ip("-n", network.bridge, "link", "add", "br0", "type", "bridge")
        _ip("-n", network.bridge, "link", "set", "br0", "up")
        for host, octet in hosts.items():
            network.add_host(host, octet)
    except BaseException:
        network.remove()
        raise
    return network


def call(executor: ThreadPoolExecutor, function: Callable[..., T], *args: Any, timeout: float = 60) -> T:
    return executor.submit(function, *args).result(timeout=timeout)
