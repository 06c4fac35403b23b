"""pytest fixtures of the board layer: `board`, `firmware_dir`, `hil_artifacts`; marker skips
(the run's board kind, and roles of multi-board tests without a board on this bench); the
consoles a failing test's report shows."""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from ..board.board import Board, open_board
from ..containers.engine import Engine
from ..netfault.container_board import open_docker_board
from ..netfault.kernel import unavailable
from ..errors import FirmwareError
from ..sim.simulator import Simulator
from .options import options

CONSOLE_KEY = pytest.StashKey["Board"]()
_START_KEY = pytest.StashKey[int]()
_ROLE_CONSOLES_KEY = pytest.StashKey[dict]()  # role -> (board, console length when watched)

MARKERS = [
    "board(kind): run only on this kind of board (unix, docker, serial or labgrid)",
    "requires_hardware: needs a real board (--board serial:PORT)",
    "requires_sim(*roles): needs the simulator (--board unix); with role names, needs those roles "
    "of a multi-board test simulated",
    "firmware(path): the firmware folder this test deploys (relative: to the rootdir), unless "
    "--firmware overrides it",
    "sim(time=, profile=, **options): how the simulated board runs this test (time: real|fast|stepped)",
]


def make_simulator(config: pytest.Config, marked: dict | None = None, **overrides) -> Simulator:
    """The ESP32 simulator a unix board runs under.

    A test's @pytest.mark.sim(time=..., profile=..., **options) wins over --sim-time/--sim-profile:
    a scenario about hour-long intervals needs fast time whatever the run's default.
    """
    opts = options(config)
    settings = {**dict(marked or {}), **overrides}
    profile = settings.pop("profile", None) or opts.board.profile or opts.sim_profile or "esp32"
    time_mode = settings.pop("time", None) or opts.sim_time or "real"
    return Simulator(profile=profile, time_mode=time_mode, **settings)


def make_board(config: pytest.Config, node: pytest.Item | None = None, sim: Simulator | None = None) -> Board:
    """A board as the options say: simulated (under `sim`, else one made with the test's sim
    marker) or real. The board owns the simulator from here on (see close_board)."""
    opts = options(config)
    if sim is None and opts.simulated():
        marker = node.get_closest_marker("sim") if node is not None else None
        sim = make_simulator(config, marker.kwargs if marker else {})
    try:
        if opts.board.kind == "docker":  # in a container on its own network
            the_board = open_docker_board_or_skip(sim, opts.board_timeout)
        else:
            the_board = open_board(opts.board, micropython=opts.micropython, sim=sim, timeout=opts.board_timeout)
    except BaseException:
        if sim is not None:
            sim.close()
        raise
    return prepared(config, the_board)


def prepared(config: pytest.Config, board: Board) -> Board:
    """A just-opened board made ready for a test: a real one's files cleaned (--board-flash clean,
    but --board-keep) and soft reset, so the test starts from the empty flash a simulated board
    has, whatever earlier tests and runs left. On failure the board is closed (a place given back)."""
    opts = options(config)
    if board.keeps_files and opts.board_flash == "clean":
        try:
            cleaning = board.clean_flash(opts.board_keep)
        except BaseException:
            close_board(board)
            raise
        if cleaning.missing:
            warnings.warn(f"{board.name}: --board-keep {', '.join(cleaning.missing)}: not on the board, nothing "
                          "kept there (a misspelt path?)", stacklevel=2)
    return board


def open_docker_board_or_skip(sim: Simulator | None, timeout: float, name: str | None = None) -> Board:
    """A simulated board in a container on DOCKER_HOST's engine (else the local socket), its
    namespace wired by a KernelLink (`board.network`); skips where no engine answers or
    namespaces cannot be wired (not root, ip/nft/tc missing)."""
    skip_without_docker_boards()
    return open_docker_board(sim, name=name, timeout=timeout)


def skip_without_docker_boards() -> None:
    """Skip the test, in one line saying why, where docker boards cannot run: no engine answers,
    or the container's namespace cannot be wired (not root, ip/nft/tc missing)."""
    reason = Engine.unavailable()
    if reason is None and unavailable() is not None:
        reason = f"kernel link: {unavailable()}"
    if reason:
        pytest.skip(f"docker board: {reason}")


def close_board(board: Board) -> None:
    """Close a board and the simulator it ran under."""
    try:
        board.close()
    finally:
        if board.sim is not None:
            board.sim.close()


@pytest.fixture(scope="module")
def _module_board() -> Iterator[dict]:
    """Holder for the board reused across one module's tests (--board-scope module)."""
    holder: dict = {}
    yield holder
    if "board" in holder:
        close_board(holder["board"])


@pytest.fixture
def hil_artifacts(request: pytest.FixtureRequest) -> Path:
    """This test's artifact folder: console log, telemetry JSONL, benchmark plots."""
    folder = options(request.config).artifacts / re.sub(r"[^\w.-]+", "_", request.node.nodeid).strip("_")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def watch_console(item: pytest.Item, board: Board) -> None:
    """Show this board's console (from now on) in the test's failure report."""
    item.stash[CONSOLE_KEY] = board
    item.stash[_START_KEY] = len(board.console.text)


@contextmanager
def lent_to_test(item: pytest.Item, board: Board, hil_artifacts: Path, start: int, close: bool = True) -> Iterator[Board]:
    """`board` for one test: its console in the test's failure report; afterwards its program
    stopped, what it printed from `start` on saved as the test's console.log, and the board (with
    its simulator) closed, unless `close` is False (a board the module keeps)."""
    watch_console(item, board)
    try:
        yield board
    finally:
        try:
            board.stop()
        except Exception:
            pass  # closed below, or replaced by the next test if it is broken
        (hil_artifacts / "console.log").write_text(board.console.text[start:])
        if close:
            close_board(board)


@pytest.fixture
def board(request: pytest.FixtureRequest, _module_board: dict, hil_artifacts: Path) -> Iterator[Board]:
    """A MicroPython board in the raw REPL: fresh per test, or the module's board after a reset."""
    reuse = options(request.config).board_scope == "module"
    if reuse and "board" in _module_board:
        the_board = _module_board["board"]
        the_board.reset()
        the_board.console.skip_to_end()
        start = len(the_board.console.text)
    else:
        the_board = make_board(request.config, request.node)
        if reuse:
            _module_board["board"] = the_board
        start = 0  # console.log keeps what opening it noted (a real board's files removed, a lock cleared)
    request.node.user_properties += [  # for --junitxml: which board ran it, where its files are
        ("hil board", the_board.name if the_board.sim is None else f"{the_board.name} ({the_board.sim.profile.name})"),
        ("hil artifacts", str(hil_artifacts))]
    with lent_to_test(request.node, the_board, hil_artifacts, start, close=not reuse):
        yield the_board


@pytest.fixture
def firmware_dir(request: pytest.FixtureRequest) -> Path:
    """The firmware folder under test (--firmware / hil_firmware, else the test's marker),
    checked to hold main.py."""
    path = options(request.config).firmware
    marker = request.node.get_closest_marker("firmware")
    if path is None and marker is not None:
        path = Path(marker.args[0])
        if not path.is_absolute():
            path = Path(request.config.rootpath) / path
    if path is None:
        pytest.skip("no firmware folder: pass --firmware DIR or set hil_firmware in the ini file")
    check_firmware(path)
    return path


def check_firmware(path: Path) -> None:
    """A firmware folder must exist and hold main.py."""
    if not path.is_dir():
        raise FirmwareError(f"firmware folder {path} does not exist")
    if not (path / "main.py").is_file():
        raise FirmwareError(f"firmware folder {path} has no main.py")


def watch_role_consoles(item: pytest.Item, boards: dict[str, Board]) -> None:
    """Show these boards' consoles (from now on), one section per role, in the failure report."""
    item.stash[_ROLE_CONSOLES_KEY] = {role: (b, len(b.console.text)) for role, b in boards.items()}


def console_of(item: pytest.Item, limit: int = 20000) -> str | None:
    """The console text a test's board printed during the test, if it had a board; with roles,
    each role's under its name (the tail of each, `limit` characters in all)."""
    the_board = item.stash.get(CONSOLE_KEY, None)
    roles = item.stash.get(_ROLE_CONSOLES_KEY, {})
    single = the_board.console.text[item.stash.get(_START_KEY, 0):] if the_board is not None else None
    if not roles:
        return single
    share = limit // (len(roles) + (single is not None))
    parts = [f"--- board ---\n{single[-share:]}"] if single is not None else []
    parts += [f"--- {role}: {b.name} ---\n{b.console.text[start:][-share:]}" for role, (b, start) in roles.items()]
    return "\n".join(parts)


def marked_roles(item: pytest.Item) -> list[str]:
    """The roles a test's @pytest.mark.boards(...) names (keywords, or bare names)."""
    marker = item.get_closest_marker("boards")
    if marker is None:
        return []
    return [*(str(a) for a in marker.args), *marker.kwargs]


def skip_by_marker(item: pytest.Item) -> None:
    """Honour @pytest.mark.board(kind=...), requires_hardware and requires_sim."""
    spec = options(item.config).board
    marker = item.get_closest_marker("board")
    if marker is not None:
        wanted = marker.kwargs.get("kind") or (marker.args[0] if marker.args else None)
        if wanted and wanted != spec.kind:
            pytest.skip(f"needs a {wanted} board; this run uses --board {spec.text}")
    if item.get_closest_marker("requires_hardware") and spec.simulated:  # a chip on serial or a labgrid place
        pytest.skip("needs a real board: run with --board serial:PORT")
    assignment = options(item.config).board_roles
    for role in marked_roles(item):
        if assignment.spec_for(role) is None:
            pytest.skip(assignment.why_absent(role))
    needs_sim = item.get_closest_marker("requires_sim")
    if needs_sim is not None and needs_sim.args:
        for role in needs_sim.args:
            role_spec = assignment.spec_for(str(role))
            if role_spec is None or not role_spec.simulated:
                pytest.skip(f"needs role {role!r} simulated: it is on {role_spec} in this run, a real board "
                            "whose inputs the test cannot set")
    elif needs_sim is not None and not spec.simulated:
        pytest.skip("needs the simulator (--board unix): a real board cannot fake its inputs")
