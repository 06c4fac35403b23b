"""Room in this process for a fleet: file descriptors.

Each simulated board holds about a dozen descriptors in the harness's process (its pty's two
ends and the serial port opened on it, pyserial's two cancel pipes, its simulator's listener,
connection, selector and wake pipe, the broker's end of its MQTT session), so 200 boards need
some 2,600: past the soft limit of 1024 many systems start a process with. The soft limit may be
raised to the hard one without privileges; that is done when a fleet needs it, and a hard limit
too low for the fleet is a one-line error before any board starts.
"""

from __future__ import annotations

import os
import resource

from ..errors import HarnessError

FDS_PER_BOARD = 16  # measured: 13 with one MQTT session each; the rest is margin
RESERVE = 64        # the broker, the test's own clients, log files


def open_fds() -> int:
    """How many descriptors this process holds now."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def ensure_fds(boards: int, what: str = "a fleet") -> int:
    """Make sure `boards` more boards fit under RLIMIT_NOFILE, raising the soft limit (up to the
    hard one) if needed; the soft limit in force. HarnessError when the hard limit is too low."""
    needed = open_fds() + boards * FDS_PER_BOARD + RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return soft
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise HarnessError(f"{what} of {boards} boards needs about {needed} file descriptors, and this "
                           f"process may open at most {hard} (the hard limit): raise it (ulimit -Hn, "
                           "or LimitNOFILE in a service) or start fewer boards")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
