"""pytest fixtures of the ESP32 simulator: `sim` (the simulated world of the running board) and
`sim_process` (run MicroPython code under a Simulator without the board layer: board/sim_process.py).

Options: --sim-time real|fast|stepped, --sim-profile NAME (used when --board is plain `unix`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from ..board.sim_process import SimProcess
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


@pytest.fixture
def sim_process() -> Iterator[SimProcess]:
    """A SimProcess in a fresh temporary board root; its processes are killed at the end."""
    with tempfile.TemporaryDirectory(prefix="simboard-") as root:
        sp = SimProcess(Path(root))
        try:
            yield sp
        finally:
            sp.close()
