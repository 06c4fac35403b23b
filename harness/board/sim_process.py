"""SimProcess: run MicroPython code under a Simulator as a plain process, without pty or REPL.

Launched exactly as a unix board is (unix_port.Launch: cwd = the board's root, MICROPYPATH =
.frozen + simulator + root/lib, the simulator's environment and heap), with the simulator's
startup code first and the script run as main.py. The simulator tests use it to check shims and
virtual time on whole runs, reading stdout/stderr and the exit code. Its processes die with the
harness, even a SIGKILLed one (tether.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .device_code import run_script
from ..sim.simulator import Simulator
from ..tether import Tether
from .unix_port import Launch, find_micropython


@dataclass
class Run:
    """The end of one simulated run: exit code and output."""

    returncode: int
    stdout: str
    stderr: str


class SimProcess:
    """Launches `micropython` on a board root under a Simulator (or none); every process it
    started is killed by pid in close(), after which it may be used again."""

    def __init__(self, root: Path, micropython: str | None = None) -> None:
        self.root = Path(root)
        self.micropython = find_micropython(micropython)
        self._tether: Tether | None = None  # made at the first start, ended by close()
        self._procs: list[subprocess.Popen] = []
        self._sims: dict[subprocess.Popen, Simulator | None] = {}

    def env(self, sim: Simulator | None) -> dict[str, str]:
        """The whole environment a launch under `sim` gets."""
        return dict(Launch.for_root(self.micropython, self.root, sim).env)

    def start(self, sim: Simulator | None, code: str, script: str = "main.py",
              extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """Write `code` to root/script and start it in the background."""
        (self.root / script).write_text(code)
        # As the board layer does: the simulator's startup code, then the script as __main__.
        startup = sim.startup_code() if sim is not None else ""
        launch = Launch.for_root(self.micropython, self.root, sim,
                                 extra_args=["-c", startup + run_script(script)], extra_env=extra_env)
        if self._tether is None:
            self._tether = Tether("sim-process")
        p = launch.start(self._tether, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._procs.append(p)
        self._sims[p] = sim
        return p

    def run(self, sim: Simulator | None, code: str, timeout: float = 30.0,
            script: str = "main.py", extra_env: dict[str, str] | None = None) -> Run:
        """Run `code` to its end (or kill it after `timeout` s and raise TimeoutError)."""
        return self.finish(self.start(sim, code, script, extra_env), timeout)

    def finish(self, p: subprocess.Popen, timeout: float = 30.0) -> Run:
        """Wait for a started process to end; its Run (TimeoutError, after killing it, at `timeout`)."""
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(p)
            out, err = p.communicate()
            raise TimeoutError(f"simulated board (pid {p.pid}) still running after {timeout}s; "
                               f"output so far:\n{out}\n{err}") from None
        sim = self._sims.get(p)
        if sim is not None and sim.connected_once:
            sim.settle()  # its last reports are recorded
        return Run(p.returncode, out, err)

    def run_boots(self, sim: Simulator, code: str, boots: int, timeout: float = 30.0) -> list[Run]:
        """Run `code` as main.py again after each chip reset it ends with, as the board layer
        does, up to `boots` launches; stops early when a run ends without a reset."""
        runs = []
        for _ in range(boots):
            r = self.run(sim, code, timeout)
            runs.append(r)
            if not sim.on_board_exit(r.returncode):
                break
        return runs

    @staticmethod
    def _kill(p: subprocess.Popen) -> None:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Kill every process started here and stop launching."""
        for p in self._procs:
            self._kill(p)
            try:
                p.communicate(timeout=5)
            except (subprocess.TimeoutExpired, ValueError):
                pass
        self._procs.clear()
        self._sims.clear()
        if self._tether is not None:
            self._tether.close()
            self._tether = None
