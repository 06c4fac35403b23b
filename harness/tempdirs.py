"""Temporary folders the harness makes (board flash, broker config, benchmark scratch), marked
with their owner so that what a killed run left behind is recognised and removed by the next.

A folder made here holds `.hil-owner`: the pid and the start time of the process that made it
(the start time tells a live owner from a new process that reuses its pid). Normal ends remove
their folders themselves; a SIGKILLed run cannot, so each session start calls `remove_stale()`,
which removes folders whose owner is gone, and never a folder of a live run or one without the
marker (another program's).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

MARKER = ".hil-owner"
PREFIX = "hil-"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    return stat.rpartition(")")[2].split()[19]


def make_temp_dir(kind: str) -> Path:
    """A new folder `hil-<kind>-*` in the system's temp folder, marked as this process's."""
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-"))
    (folder / MARKER).write_text(f"{os.getpid()} {_start_time(os.getpid()) or ''}\n")
    return folder


def remove(folder: Path | str) -> None:
    """Remove a folder made by make_temp_dir (no error if it is already gone)."""
    shutil.rmtree(folder, ignore_errors=True)


def _owner_alive(marker: Path) -> bool:
    try:
        pid_text, _, started = marker.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return True  # unreadable or half-written: leave it alone
    now = _start_time(pid)
    return now is not None and (not started or now == started)


def remove_stale(root: Path | str | None = None) -> list[Path]:
    """Remove the marked folders whose owner process has ended; the folders removed."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for folder in root.glob(f"{PREFIX}*"):
        marker = folder / MARKER
        if folder.is_dir() and marker.is_file() and not _owner_alive(marker):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
