"""The multi-board scenarios with one role on a serial port (--board relay=serial:PORT) while the
others stay simulated: proved as the serial path is, through a pty. The chip on the other end is
a simulated ESP32 served on a pty of its own (board/server.py, as `hil serve` does), which
behaves as a chip on a serial line does: Ctrl-C interrupts running code, an ended process boots
again. The harness under test only sees a serial port."""

from pathlib import Path

import pytest

from micropython_hil.board.board import Board
from micropython_hil.board.server import BoardServer
from micropython_hil.board.unix_port import wait_gone
from micropython_hil.deploy import packages
from micropython_hil.sim.simulator import Simulator

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def pty_chip():
    """A simulated ESP32 on a pty: a chip on a serial port to the child run."""
    with Simulator() as sim, Board.unix(sim=sim, name="pty-relay") as chip:
        server = BoardServer(chip).start()
        pid = chip.port.pid
        try:
            yield server
        finally:
            server.close()
    assert pid is None or wait_gone(pid), f"micropython pid {pid} outlived its test"


# One child run per scenario, each with a fresh chip: board/server.py turns a client's Ctrl-C into
# a pending simulator interrupt even when the REPL, not running code, takes it (the raw REPL is
# entered with Ctrl-C), so a second run on the same served board would start interrupted.
@pytest.mark.parametrize("scenario", ["within_the_budget", "cut_off", "three_boards"])
def test_the_multi_board_scenarios_run_with_the_relay_on_a_serial_port(pytester, pty_chip, tmp_path, scenario,
                                                                       monkeypatch):
    # The child run has its own HOME: it reads MicroPython packages from this run's cache, offline.
    monkeypatch.setenv("MICROPYTHON_HIL_PACKAGES", str(packages.cache_dir()))
    result = pytester.runpytest_subprocess(
        f"{REPO}/scenarios/test_multi_board.py", "--rootdir", str(REPO), "-p", "no:cacheprovider", "-rs",
        "--board", f"relay=serial:{pty_chip.device}", "--hil-artifacts", str(tmp_path / "arts"),
        "-k", scenario, timeout=300)
    result.assert_outcomes(passed=1, deselected=3)
    log = next((tmp_path / "arts").rglob("console-relay.log")).read_text()
    assert "home node relay-r" in log and "link: online" in log
