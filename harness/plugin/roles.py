"""pytest fixture of multi-board tests: `boards`, several boards by role (fleet/team.py).

    @pytest.mark.boards(switch="firmware_under_test/wall_switch",
                        relay="firmware_under_test/home_automation")
    def test_switch_drives_relay(boards, telemetry):
        boards.relay.start()
        boards.switch.start(extra={"target_topic": boards.relay.topic("cmd")})

A role's value in the marker is its firmware folder (relative: to the rootdir), None (a bare
board), or a dict: {"firmware": folder, "profile": "esp32s3", "time": "fast", ...} (the sim
marker's options, for that role's simulator; the test's @pytest.mark.sim applies to all).
Each role gets a board as `--board` assigns it (`--board relay=serial:/dev/ttyUSB0`,
`--board relay=labgrid:PLACE`: a real role's files cleaned as a one-board test's are;
`--board relay=docker:esp32`: simulated in a container on its own network, skipped where no
engine answers; the others simulated, or absent on a bench, where the test skips saying which), its own client id and
console; a simulated role's board is wired as its firmware's manifest says. Consoles are saved
as console-<role>.log in the test's artifact folder and shown per role when the test fails.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from ..board.board import Board, open_board
from ..deploy.firmware import Firmware
from ..deploy.device_start import firmware_of
from ..fleet.fleet import wire
from ..fleet.team import Boards
from .board import (close_board, make_simulator, marked_roles, prepared, skip_without_docker_boards,
                    watch_role_consoles)
from .options import options

MARKERS = [
    "boards(**roles): several boards in this test, by role: role='firmware folder' (or None, or "
    "{'firmware': folder, 'profile': ..., 'time': ...}); the `boards` fixture gives each role its "
    "board (--board ROLE=SPEC puts one on a real board)",
]


@dataclass
class _Wanted:
    firmware: Firmware | None
    sim: dict = field(default_factory=dict)  # the role's simulator options (profile, time, ...)


def _wanted(item: pytest.Item) -> dict[str, _Wanted]:
    marker = item.get_closest_marker("boards")
    base = Path(item.config.rootpath)
    wanted: dict[str, _Wanted] = {}
    for role in marked_roles(item):
        value: Any = marker.kwargs.get(role) if marker is not None else None
        if isinstance(value, dict):
            settings = dict(value)
            folder = settings.pop("firmware", None)
            wanted[role] = _Wanted(firmware_of(folder, base) if folder else None, settings)
        elif value is None or isinstance(value, (str, Path, Firmware)):
            wanted[role] = _Wanted(firmware_of(value, base) if value else None)
        else:
            raise pytest.UsageError(f"{item.nodeid}: boards({role}=...): a firmware folder, None or a dict, "
                                    f"not {type(value).__name__}")
    return wanted


def _open(config: pytest.Config, item: pytest.Item, role: str, wanted: _Wanted) -> Board:
    """The role's board as --board assigns it: simulated (unix, or docker: in a container; wired as
    its firmware says) or real."""
    opts = options(config)
    spec = opts.board_roles.spec_for(role)
    name = f"{role}[{spec}]"
    if not spec.simulated:  # a chip on a serial port or a labgrid place, opened as one-board tests open it
        return prepared(config, open_board(spec, name=name, timeout=opts.board_timeout))
    marker = item.get_closest_marker("sim")
    overrides = {"profile": spec.profile} if spec.profile else {}
    sim = make_simulator(config, {**(marker.kwargs if marker else {}), **wanted.sim}, **overrides)
    try:
        wire(sim, wanted.firmware)
        return open_board(spec, micropython=opts.micropython, sim=sim, name=name, timeout=opts.board_timeout)
    except BaseException:
        sim.close()
        raise


@pytest.fixture
def boards(request: pytest.FixtureRequest, broker: Any, hil_artifacts: Path) -> Iterator[Boards]:
    """The roles of this test's @pytest.mark.boards(...), each on its own board; start each
    role's firmware with boards.<role>.start(...), synchronise with boards.sync."""
    item = request.node
    wanted = _wanted(item)
    if not wanted:
        raise pytest.UsageError(f"{item.nodeid}: the boards fixture needs @pytest.mark.boards(role='firmware "
                                "folder', ...) naming the roles")
    assignment = options(request.config).board_roles
    for role in wanted:
        spec = assignment.spec_for(role)
        if spec is None:
            pytest.skip(assignment.why_absent(role))
        if spec.kind == "docker":
            skip_without_docker_boards()
    telemetry = request.getfixturevalue("telemetry") if "telemetry" in request.fixturenames else None
    team = Boards(broker, telemetry=telemetry, wifi=options(request.config).wifi)
    opened: dict[str, Board] = {}
    try:
        with ThreadPoolExecutor(max_workers=len(wanted), thread_name_prefix="hil-roles") as pool:
            futures = {role: pool.submit(_open, request.config, item, role, w) for role, w in wanted.items()}
            errors = []
            for role, future in futures.items():
                try:
                    opened[role] = future.result()
                except BaseException as e:  # noqa: BLE001 - raised below, once every board is back
                    errors.append(e)
        if errors:
            raise errors[0]
        for role, w in wanted.items():
            team.add(role, opened[role], w.firmware)
        watch_role_consoles(item, opened)
        yield team
    finally:
        team.close()
        for role, board in opened.items():
            try:
                board.stop()
            except Exception:  # noqa: BLE001 - closed below whatever state it is in
                pass
            (hil_artifacts / f"console-{role}.log").write_text(board.console.text)
            close_board(board)
