"""A network namespace of the harness's own, for a simulated board's process.

The namespace is held open by a small process (`unshare --net`, then `sleep`) forked through a
Tether, so it dies with the harness, even a SIGKILLed one; the kernel then removes the namespace
and every veth link with an end in it once the last process inside is gone. Nothing is named in
/run/netns and no rule is left in the host's own namespace, so a killed run leaves nothing behind.

Commands run inside through `nsenter --net` (iproute2's `ip`, `nft`, `tc`, sysctls written under
/proc/sys, which shows the namespace of the process reading it). Needs root (CAP_NET_ADMIN and
CAP_SYS_ADMIN), util-linux (unshare, nsenter), iproute2 (ip, tc) and nftables (nft).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from typing import Sequence

from ..errors import NetFaultError
from ..tether import Tether

TOOLS = {"ip": "iproute2", "tc": "iproute2", "nft": "nftables", "unshare": "util-linux", "nsenter": "util-linux"}


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """None when namespaces with kernel faults work here, else why not (for a skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN): run as root, as CI does"
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)})
    if missing:
        return f"{', '.join(t for t, p in TOOLS.items() if p in missing)} missing: apt-get install {' '.join(missing)}"
    probe = subprocess.run(["unshare", "--net", "--", "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p1"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a network namespace with a veth link here ({probe.stderr.strip() or probe.returncode})"
    return None


def run(argv: Sequence[str], input: str | None = None, what: str | None = None) -> str:
    """Run a command (in this namespace); its output. NetFaultError naming it when it fails."""
    try:
        done = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NetFaultError(f"{argv[0]} is not installed (apt-get install {TOOLS.get(argv[0], argv[0])})") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise NetFaultError(f"{what or ' '.join(argv)}: {lines[-1] if lines else f'exit code {done.returncode}'}")
    return done.stdout


class NetNamespace:
    """A network namespace held by a tethered process; `close()` (or the harness ending) frees it."""

    def __init__(self, name: str, tether: Tether) -> None:
        self.name = name
        self._proc = tether.popen(["unshare", "--net", "--", "sh", "-c", "echo ready; exec sleep infinity"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if self._proc.stdout.readline() != b"ready\n":  # the namespace exists once this is printed
            error = self._proc.stderr.read().decode(errors="replace").strip()
            self.close()
            raise NetFaultError(f"namespace {name}: unshare --net failed ({error or 'no output'})")

    @property
    def pid(self) -> int:
        """The pid of the process holding the namespace (`ip link ... netns PID` moves a link in)."""
        return self._proc.pid

    @property
    def path(self) -> str:
        return f"/proc/{self._proc.pid}/ns/net"

    def argv(self, argv: Sequence[str]) -> list[str]:
        """A command line that runs `argv` inside this namespace."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def run(self, argv: Sequence[str], input: str | None = None) -> str:
        """Run a command inside; its output (NetFaultError naming the namespace if it fails)."""
        return run(self.argv(argv), input=input, what=f"{self.name}: {' '.join(argv)}")

    def script(self, text: str) -> str:
        """Run a shell script inside (stopping at the first failing command)."""
        return run(self.argv(["sh", "-ec", text]), what=f"{self.name}: setup")

    def close(self) -> None:
        """End the holding process: the kernel frees the namespace once nothing else is inside."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()

    def __repr__(self) -> str:
        return f"NetNamespace({self.name!r}, pid={self._proc.pid})"


class ProcessNamespace(NetNamespace):
    """The network namespace of a process the harness does not hold (a container's first
    process): commands run inside as in a NetNamespace; close() leaves it to its owner."""

    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self._pid = int(pid)
        if not os.path.exists(self.path):
            raise NetFaultError(f"namespace {name}: no process {pid} on this machine")

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def path(self) -> str:
        return f"/proc/{self._pid}/ns/net"

    def close(self) -> None:
        pass  # the namespace ends with its owner (the container's removal)

    def __repr__(self) -> str:
        return f"ProcessNamespace({self.name!r}, pid={self._pid})"
