"""Who holds a labgrid place: the name a run acquires places under, and whether the run that a
holder's name describes is over.

labgrid records who acquired a place as `HOST/USER`, the name of the client's session (the host
name and the login, or LG_HOSTNAME and LG_USERNAME). The harness acquires under
`HOST/USER+hil-PID-MACHINE-RUN`:

- PID: the run holding the place (the pytest process, or an xdist worker);
- MACHINE: a short hash of this machine's id;
- RUN: a short hash of that process's run id (machine, boot, pid and start time of the process:
  containers/ownership.py), which a new process reusing the pid, or the same pid after a
  reboot, does not have.

So two runs of one user on one host are told apart (the second is refused, naming the first), and
a place a SIGKILLed run left held is recognised by the next run on the same machine: its MACHINE
matches and its RUN no longer does. A holder without the suffix (someone's `labgrid-client
acquire`) or with another machine's hash is never taken for stale: its lock is left alone.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from ..containers.ownership import run_id

_SUFFIX = re.compile(r"\+hil-(\d+)-([0-9a-f]{8})-([0-9a-f]{8})$")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _machine_digest() -> str:
    return _digest(run_id().split("/")[0])  # run_id: MACHINE/BOOT/PID/START


def owner_user(user: str, pid: int | None = None) -> str:
    """The labgrid user name a run acquires places under: `user` and the run's suffix."""
    pid = os.getpid() if pid is None else pid
    return f"{user}+hil-{pid}-{_machine_digest()}-{_digest(run_id(pid))}"


@dataclass(frozen=True)
class Holder:
    """Who holds a place, read from labgrid's `HOST/USER`."""

    acquired: str          # as labgrid records it
    pid: int | None        # the holding run's process, when the harness named the holder
    here: bool             # that run is on this machine (its pid means something here)
    alive: bool            # ... and it is still running (False where it cannot be known)
    mine: bool = False     # ... and it is the run asking

    @classmethod
    def of(cls, acquired: str, run: int | None = None) -> "Holder":
        """Who `acquired` names; `run`: the pid of the run asking (default: this process)."""
        match = _SUFFIX.search(acquired)
        if match is None:
            return cls(acquired, None, False, False)
        pid, machine, digest = int(match.group(1)), match.group(2), match.group(3)
        here = machine == _machine_digest()
        now = run_id(pid)  # ends in "/" (no start time) once the process is gone
        alive = here and not now.endswith("/") and _digest(now) == digest
        return cls(acquired, pid, here, alive, alive and pid == (os.getpid() if run is None else run))

    @property
    def stale(self) -> bool:
        """A run of this harness on this machine that is over: its lock may be cleared."""
        return self.pid is not None and self.here and not self.alive

    def describe(self) -> str:
        """Who it is, for a one-line message."""
        if self.pid is None:
            return f"{self.acquired} (not a micropython-hil run: `labgrid-client acquire`?)"
        if self.mine:
            return f"{self.acquired} (this run: another of its boards holds it)"
        if self.alive:
            return f"{self.acquired} (a micropython-hil run, pid {self.pid} on this machine, still running)"
        if not self.here:
            return f"{self.acquired} (a micropython-hil run, pid {self.pid} on another machine)"
        return f"{self.acquired} (a micropython-hil run that is over, pid {self.pid})"
