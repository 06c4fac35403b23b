"""pytest fixtures of kernel-level network faults: `kernel_link` (a board's own network
namespace and its faults: netfault/kernel.py) and `netns_board` (a simulated board whose
MicroPython process runs in it, driven through the same pty REPL and simulator channel).

A test module runs its board, and so `sim` and `start_firmware`, in the namespace by overriding
the board fixture:

    @pytest.fixture
    def board(netns_board):
        return netns_board

    def test_lossy_wifi(kernel_link, start_firmware, telemetry):
        device = start_firmware()
        with kernel_link.loss(10):
            ...

Both skip, saying why, where namespaces cannot be made (not root, or ip/nft/tc missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from ..board.board import Board
from ..board.unix_board import UnixBoard
from ..board.unix_port import find_micropython
from ..netfault.container_board import channel_port
from ..netfault.kernel import KernelLink, unavailable
from ..sim.simulator import Simulator
from .board import lent_to_test, make_simulator
from .options import options


@pytest.fixture
def kernel_link() -> Iterator[KernelLink]:
    """A started KernelLink: loss(), rate() and down() on its WiFi path; closed after the test."""
    reason = unavailable()
    if reason:
        pytest.skip(f"kernel link: {reason}")
    with KernelLink() as link:
        yield link


def open_netns_board(link: KernelLink, sim: Simulator, micropython: str | None = None,
                     timeout: float = 10.0) -> UnixBoard:
    """A simulated board whose process runs in `link`'s namespace; its control channel takes the wire."""
    link.wire_port(channel_port(sim))
    return UnixBoard.open(micropython=link.launcher(find_micropython(micropython)), sim=sim,
                          name=f"netns-{link.name}", timeout=timeout)


@pytest.fixture
def netns_board(request: pytest.FixtureRequest, kernel_link: KernelLink, hil_artifacts: Path) -> Iterator[Board]:
    """A simulated ESP32 (the test's sim marker applies) in kernel_link's network namespace."""
    opts = options(request.config)
    if not opts.simulated():
        pytest.skip(f"netns_board runs a simulated board; this run uses --board {opts.board.text}")
    marker = request.node.get_closest_marker("sim")
    sim = make_simulator(request.config, marker.kwargs if marker else {})
    try:
        the_board = open_netns_board(kernel_link, sim, opts.micropython, opts.board_timeout)
    except BaseException:
        sim.close()
        raise
    with lent_to_test(request.node, the_board, hil_artifacts, start=len(the_board.console.text)):
        yield the_board
