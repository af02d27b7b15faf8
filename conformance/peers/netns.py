"""Test hosts on one machine: Linux network namespaces joined by a bridge, each with its own address.

WHY: the scale-out processes (listeners, workers, dispatchers) must work when each is on its own
host, reaching PostgreSQL, Orthanc and the FHIR server over a network rather than loopback. A
namespace per "host" gives each process its own interfaces and address, so a process that quietly
relied on 127.0.0.1 or on a local file lock fails here as it would on real hosts. The root
namespace is the "services host" (10.x.y.1 on the bridge): PostgreSQL, Orthanc and the FHIR peer
listen there.

Needs root and iproute2 (`ip netns`). Everything made is removed on exit, also when a test fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from conformance.peers.process import PeerUnavailable


def netns_missing_reason() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")


@dataclass
class Host:
    """One namespace with one address on the bridge."""

    name: str
    address: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def popen(self, argv: list[str], *, env: dict[str, str], log: Path,
              cwd: Path | None = None) -> subprocess.Popen:
        """Start ``argv`` inside this host; stdout and stderr go to ``log``."""
        out = open(log, "ab")  # noqa: SIM115 - the child owns it; closed when the child exits
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], env=env, cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.procs.append(proc)
        return proc


class HostNetwork:
    """A bridge ``cds<tag>`` at ``10.77.<subnet>.1/24`` and namespaces added with :meth:`add`."""

    def __init__(self, subnet: int | None = None) -> None:
        reason = netns_missing_reason()
        if reason:
            raise PeerUnavailable(reason)
        self.tag = f"{os.getpid() % 100000}"
        self.subnet = subnet if subnet is not None else 100 + os.getpid() % 150
        self.bridge = f"cdsbr{self.tag}"
        self.gateway = f"10.77.{self.subnet}.1"
        self.hosts: list[Host] = []

    def __enter__(self) -> HostNetwork:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "up")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        return self

    def add(self, label: str) -> Host:
        """A new host on the bridge, with the next free address."""
        index = len(self.hosts) + 11
        name = f"cds{self.tag}{label}"[:15]
        veth = f"v{self.tag}{index}"[:15]
        _ip("netns", "add", name)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("link", "set", veth, "master", self.bridge, "up")
        address = f"10.77.{self.subnet}.{index}"
        _ip("addr", "add", f"{address}/24", "dev", "eth0", ns=name)
        _ip("link", "set", "eth0", "up", ns=name)
        _ip("link", "set", "lo", "up", ns=name)
        host = Host(name, address)
        self.hosts.append(host)
        return host

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for host in self.hosts:
            for proc in host.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
