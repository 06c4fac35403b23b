"""pytest fixtures of the ESP32 simulator: `sim` (the simulated world of the running board) and
`sim_process` (run MicroPython code under a Simulator without the board layer: board/sim_process.py).
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from .. import tempdirs
from ..board.sim_process import SimProcess
from ..sim.simulator import Simulator


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
    folder = tempdirs.make_temp_dir("simboard")
    root = folder / "flash"
    root.mkdir()
    sp = SimProcess(root)
    try:
        yield sp
    finally:
        sp.close()
        tempdirs.remove(folder)
