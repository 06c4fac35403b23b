"""pytest fixtures of the ESP32 simulator: `sim` (the simulated world of the running board) and
`sim_process` (run MicroPython code under a Simulator without the board layer).

Options: --sim-time real|fast|stepped, --sim-profile NAME (used when --board is plain `unix`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from ..sim.simulator import TIME_MODES, Simulator


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("micropython-hil-sim", "MicroPython HIL: simulated ESP32")
    group.addoption("--sim-time", dest="sim_time", default=None, choices=TIME_MODES,
                    help="board clock of the simulated ESP32: real (default), fast (sleeps jump) "
                         "or stepped (the test advances it with sim.advance)")
    group.addoption("--sim-profile", dest="sim_profile", default=None, metavar="NAME",
                    help="board profile when --board is plain unix (default esp32; "
                         "--board unix:NAME overrides)")


@pytest.fixture
def sim(board: Any) -> Simulator:
    """The Simulator the board runs under; skips on real hardware, which cannot fake inputs."""
    s = getattr(board, "sim", None)
    if s is None:
        pytest.skip(f"needs the simulated board (--board unix): {getattr(board, 'name', 'this board')} "
                    "is real hardware, whose sensors and pins the test cannot set")
    return s


@dataclass
class Run:
    """The end of one simulated run: exit code and output."""

    returncode: int
    stdout: str
    stderr: str


class SimProcess:
    """Launch `micropython` under a Simulator the way the board layer does (cwd = the board's
    root, MICROPYPATH = .frozen + simulator + root/lib), without a pty or REPL. Every process
    started is killed by pid in close()."""

    def __init__(self, root: Path, micropython: str = "micropython") -> None:
        self.root = Path(root)
        self.micropython = micropython
        self._procs: list[subprocess.Popen] = []

    def env(self, sim: Simulator | None) -> dict[str, str]:
        path = [".frozen", *(sim.micropypath() if sim else []), str(self.root / "lib")]
        env = dict(os.environ, MICROPYPATH=":".join(path))
        if sim is not None:
            env.update(sim.env())
        return env

    def start(self, sim: Simulator | None, code: str, script: str = "main.py",
              extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """Write `code` to root/script and start it in the background."""
        (self.root / script).write_text(code)
        # As the board layer does: the simulator's startup code, then the script as __main__.
        runner = f"exec(compile(open({script!r}).read(), {script!r}, 'exec'), {{'__name__': '__main__'}})"
        args = [self.micropython, *(sim.launch_args() if sim else []),
                "-c", (sim.startup_code() if sim else "") + runner]
        p = subprocess.Popen(args, cwd=self.root, env={**self.env(sim), **(extra_env or {})}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
        self._procs.append(p)
        p.sim = sim  # type: ignore[attr-defined]
        return p

    def run(self, sim: Simulator | None, code: str, timeout: float = 30.0,
            script: str = "main.py", extra_env: dict[str, str] | None = None) -> Run:
        """Run `code` to its end (or kill it after `timeout` s and raise TimeoutError)."""
        return self.finish(self.start(sim, code, script, extra_env), timeout)

    def finish(self, p: subprocess.Popen, timeout: float = 30.0) -> Run:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(p)
            out, err = p.communicate()
            raise TimeoutError(f"simulated board (pid {p.pid}) still running after {timeout}s; "
                               f"output so far:\n{out}\n{err}") from None
        if p.sim is not None and p.sim.connected_once:  # type: ignore[attr-defined]
            p.sim.settle()  # type: ignore[attr-defined]  # its last reports are recorded
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
        for p in self._procs:
            self._kill(p)
            try:
                p.communicate(timeout=5)
            except (subprocess.TimeoutExpired, ValueError):
                pass
        self._procs.clear()


@pytest.fixture
def sim_process() -> Iterator[SimProcess]:
    """A SimProcess in a fresh temporary board root; its processes are killed at the end."""
    with tempfile.TemporaryDirectory(prefix="simboard-") as root:
        sp = SimProcess(Path(root))
        try:
            yield sp
        finally:
            sp.close()
