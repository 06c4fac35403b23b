"""Which run a container belongs to: the label every container the harness starts carries, and
whether the run it names is over.

A SIGKILLed pytest cannot remove its containers (the engine keeps them running: they are not
its children), so each one is labelled with its run, `MACHINE/BOOT/PID/START`: this machine's
id, this boot's id, the pid and the start time of the process that made it (the start time
tells a live owner from a new process that reuses its pid). The next start on any engine removes
the containers whose owner is gone, and never a container without the label, nor one made on
another machine (whose pids mean nothing here), nor one of a live run.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

LABEL = "micropython-hil.run"       # MACHINE/BOOT/PID/START of the process that made the container
ROLE_LABEL = "micropython-hil.role"  # what it is for: "broker", ...


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _machine() -> str:
    """This machine's id (systemd's machine-id, else the host name): '/'-free."""
    return (_read("/etc/machine-id") or _read("/var/lib/dbus/machine-id") or socket.gethostname()).replace("/", "_")


def _boot() -> str:
    return _read("/proc/sys/kernel/random/boot_id") or "unknown-boot"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    return stat.rpartition(")")[2].split()[19]


def run_id(pid: int | None = None) -> str:
    """The label value naming the run of process `pid` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    return f"{_machine()}/{_boot()}/{pid}/{_start_time(pid) or ''}"


def run_labels(role: str) -> dict[str, str]:
    """The labels of a container this process starts."""
    return {LABEL: run_id(), ROLE_LABEL: role}


def owner_gone(value: str) -> bool:
    """True when the run a label names has certainly ended: made on this machine, and in an
    earlier boot or by a process that no longer exists. An unreadable label, another machine's
    or a live run's: False (left alone)."""
    parts = value.split("/")
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    machine, boot, pid, started = parts
    if machine != _machine():
        return False
    if boot != _boot():
        return True
    now = _start_time(int(pid))
    return now is None or (bool(started) and now != started)
