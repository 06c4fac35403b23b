"""Child processes tied to the harness's life: the kernel SIGKILLs them if the harness dies.

Every process the harness starts (unix-port boards, SimProcess, micropython_mqtt scripts,
mosquitto) is forked through a Tether, so none outlives a SIGKILLed pytest.

Each child asks for prctl(PR_SET_PDEATHSIG, SIGKILL) before it execs. Linux sends that signal
when the *thread* that forked the child exits, not when the process does; so every child of a
`Tether` is forked by the tether's own thread, which lives until `close()`. A child forked by a
short-lived thread (a helper thread that restarts a broker, say) would be killed as soon as that
thread returned.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import threading
from typing import Any, Callable, Sequence

from .errors import HarnessError

_PR_SET_PDEATHSIG = 1

try:  # loaded here, not in the child: dlopen between fork and exec can deadlock on its locks
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


def _die_with(parent: int) -> Callable[[], None]:
    """The child's preexec step: SIGKILL when the forking thread ends."""

    def arm() -> None:
        if _LIBC is None or not hasattr(_LIBC, "prctl"):
            return  # no prctl on this system: the child may outlive a killed harness
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the harness died between fork and prctl: nothing will signal
            os._exit(1)

    return arm


class Tether:
    """Starts child processes from one thread that lives until `close()`; each child is
    SIGKILLed by the kernel when that thread ends (the harness dying, or close())."""

    def __init__(self, name: str = "hil-tether") -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            argv, kwargs, reply = job
            try:
                reply.put(subprocess.Popen(argv, preexec_fn=_die_with(os.getpid()), **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
                reply.put(exc)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """subprocess.Popen(argv, **kwargs), forked by the tether's thread."""
        if not self._thread.is_alive():
            raise HarnessError(f"{self._thread.name}: closed, it starts no more processes")
        reply: queue.Queue = queue.Queue(maxsize=1)
        self._jobs.put((list(argv), kwargs, reply))
        result = reply.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        """End the thread. Children still running die with it, so stop them first."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
