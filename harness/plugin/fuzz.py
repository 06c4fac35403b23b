"""pytest fixtures of message fuzzing: `fuzz_board` and `fuzzer`.

Options: --fuzz-examples N (hypothesis examples per run, each a batch of payloads; default 100),
--fuzz-seed S, --fuzz-batch B, --fuzz-database DIR (default .hypothesis/fuzz under the rootdir),
--fuzz-long (run tests marked `fuzz`, the long runs; `-m fuzz` does too).

Also the fuzz runs' hypothesis statistics, handed to each test for --hypothesis-show-statistics
(`report_statistics`, called by the plugin's teardown hook).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

from ..board.board import Board
from ..deploy.firmware import Firmware
from .board import close_board, make_board, make_simulator, watch_console
from .options import options

if TYPE_CHECKING:
    from ..fuzz.fuzzer import Fuzzer

MARKERS = ["fuzz: a long fuzz run; skipped unless --fuzz-long or -m fuzz"]


@pytest.fixture(autouse=True)
def _fuzz_marker_gate(request: pytest.FixtureRequest) -> None:
    """Tests marked `fuzz` are long runs: skipped unless --fuzz-long or a -m naming fuzz."""
    if request.node.get_closest_marker("fuzz") is None:
        return
    config = request.config
    if not options(config).fuzz_long and "fuzz" not in (config.option.markexpr or ""):
        pytest.skip("long fuzz run: pass --fuzz-long or -m fuzz")


@pytest.fixture
def fuzz_board(request: pytest.FixtureRequest, hil_artifacts: Path) -> Iterator[Board]:
    """The board fuzzing runs on. On the simulator: a fresh unix board in fast time (sleeps jump,
    so the firmware's loop turns as fast as messages come) unless --sim-time names a mode;
    on real hardware: the `board` fixture's board."""
    opts = options(request.config)
    if not opts.simulated() or opts.sim_time:
        yield request.getfixturevalue("board")
        return
    the_board = make_board(request.config, sim=make_simulator(request.config, time="fast", wifi_connect_s=0))
    watch_console(request.node, the_board)  # its console goes into the test report
    try:
        yield the_board
    finally:
        try:
            (hil_artifacts / "console.log").write_text(the_board.console.text)
        finally:
            close_board(the_board)


@pytest.fixture
def fuzzer(request: pytest.FixtureRequest, fuzz_board: Board, firmware: Firmware, broker: Any) -> Iterator["Fuzzer"]:
    """The test's firmware running on `fuzz_board`, ready for fuzzer.check(payloads) and
    fuzzer.run() (examples, seed, batch and database from the --fuzz-* options)."""
    from ..fuzz.fuzzer import Fuzzer  # imported here: hypothesis's strategies are slow to load at plugin import

    opts = options(request.config)
    f = Fuzzer(fuzz_board, firmware, broker, examples=opts.fuzz_examples, seed=opts.fuzz_seed,
               batch=opts.fuzz_batch, database=opts.fuzz_database)
    f.start()
    try:
        yield f
    finally:
        f.close()


def report_statistics(item: pytest.Item) -> None:
    """Give `item` the statistics of the fuzz runs it made (setup, call and teardown), where
    hypothesis's pytest plugin reads a test's statistics (`item.hypothesis_statistics`, which it
    sets itself only for a test that is @given): --hypothesis-show-statistics prints them, and
    --junitxml carries them. Appended to any the test has of its own."""
    progress = sys.modules.get("micropython_hil.fuzz.progress")
    if progress is None:
        return  # nothing of fuzz was loaded, so no run could have delivered any
    runs = progress.take_statistics()
    if not runs:
        return
    text = "\n\n".join(f"  {what}:\n{textwrap.indent(body, '  ')}" for what, body in runs)
    earlier = getattr(item, "hypothesis_statistics", None)
    item.hypothesis_statistics = (f"{earlier}\n\n" if earlier else f"{item.nodeid}:\n\n") + text
