"""pytest fixtures and options of message fuzzing: `fuzz_board` and `fuzzer`.

Options: --fuzz-examples N (hypothesis examples per run, each a batch of payloads; default 100),
--fuzz-seed S, --fuzz-batch B, --fuzz-database DIR (default .hypothesis/fuzz under the rootdir),
--fuzz-long (run tests marked `fuzz`, the long runs; `-m fuzz` does too).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

from ..board.board import Board
from ..deploy.firmware import Firmware
from .board import CONSOLE_KEY, board_kind, setting

if TYPE_CHECKING:
    from ..fuzz.fuzzer import Fuzzer

MARKERS = ["fuzz: a long fuzz run; skipped unless --fuzz-long or -m fuzz"]


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("micropython-hil-fuzz", "MicroPython HIL: message fuzzing")
    group.addoption("--fuzz-examples", type=int, default=100, metavar="N",
                    help="hypothesis examples per fuzz run, each a batch of payloads (default 100)")
    group.addoption("--fuzz-seed", type=int, default=None, metavar="S",
                    help="seed for fuzz runs (default: random; failures are replayed from the database)")
    group.addoption("--fuzz-batch", type=int, default=32, metavar="B",
                    help="most payloads delivered per example before the liveness ping (default 32)")
    group.addoption("--fuzz-database", default=None, metavar="DIR",
                    help="hypothesis example database of fuzz failures (default ROOTDIR/.hypothesis/fuzz)")
    group.addoption("--fuzz-long", action="store_true", default=False,
                    help="also run the long fuzz runs (tests marked fuzz)")


@pytest.fixture(autouse=True)
def _fuzz_marker_gate(request: pytest.FixtureRequest) -> None:
    """Tests marked `fuzz` are long runs: skipped unless --fuzz-long or a -m naming fuzz."""
    if request.node.get_closest_marker("fuzz") is None:
        return
    config = request.config
    if not config.getoption("fuzz_long", default=False) and "fuzz" not in (config.option.markexpr or ""):
        pytest.skip("long fuzz run: pass --fuzz-long or -m fuzz")


@pytest.fixture
def fuzz_board(request: pytest.FixtureRequest, hil_artifacts: Path) -> Iterator[Board]:
    """The board fuzzing runs on. On the simulator: a fresh unix board in fast time (sleeps jump,
    so the firmware's loop turns as fast as messages come) unless --sim-time names a mode;
    on real hardware: the `board` fixture's board."""
    config = request.config
    if board_kind(config) != "unix" or config.getoption("sim_time", default=None):
        yield request.getfixturevalue("board")
        return
    from ..sim.simulator import Simulator

    profile = str(setting(config, "board")).partition(":")[2] or config.getoption("sim_profile", default=None) or "esp32"
    sim = Simulator(profile=profile, time_mode="fast", wifi_connect_s=0)
    try:
        the_board = Board.unix(micropython=setting(config, "micropython") or None, sim=sim,
                               timeout=config.getoption("board_timeout", default=None) or 10.0)
    except BaseException:
        sim.close()
        raise
    request.node.stash[CONSOLE_KEY] = the_board  # its console goes into the test report
    try:
        yield the_board
    finally:
        try:
            (hil_artifacts / "console.log").write_text(the_board.console.text)
        finally:
            the_board.close()
            sim.close()


@pytest.fixture
def fuzzer(request: pytest.FixtureRequest, fuzz_board: Board, firmware: Firmware, broker: Any) -> Iterator["Fuzzer"]:
    """The test's firmware running on `fuzz_board`, ready for fuzzer.check(payloads) and
    fuzzer.run() (examples, seed, batch and database from the --fuzz-* options)."""
    from ..fuzz.fuzzer import Fuzzer  # imported here: hypothesis's strategies are slow to load at plugin import

    config = request.config
    database = config.getoption("fuzz_database") or Path(config.rootpath) / ".hypothesis" / "fuzz"
    f = Fuzzer(fuzz_board, firmware, broker, examples=config.getoption("fuzz_examples"),
               seed=config.getoption("fuzz_seed"), batch=config.getoption("fuzz_batch"), database=database)
    f.start()
    try:
        yield f
    finally:
        f.close()
