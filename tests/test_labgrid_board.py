"""`--board labgrid:PLACE`: a chip on a labgrid place, locked while the board is open.

The lab is real and on loopback (tests/labgrid_lab/loopback_lab.py): labgrid's coordinator and
exporter, Debian's ser2net, and a simulated ESP32 served on a pty standing in for the chip. Where
labgrid or ser2net is missing those tests skip and say how to get them (.ci/run's labgrid step
installs both); the spec, ownership and import tests run everywhere.
"""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from micropython_hil.board import BoardSpec, LabgridBoard, SerialBoard, open_board
from micropython_hil.board.place_owner import Holder, owner_user
from micropython_hil.errors import BoardConnectionError, BoardException
from micropython_hil.tether import Tether

sys.path.insert(0, str(Path(__file__).resolve().parent / "labgrid_lab"))
from loopback_lab import LoopbackLab, children, free_port, missing  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HEARTBEAT = REPO / "firmware_under_test" / "heartbeat"


@pytest.fixture(scope="module")
def lab():
    why = missing()
    if why:
        pytest.skip(why)
    with LoopbackLab() as the_lab:
        yield the_lab


@pytest.fixture
def coordinator(lab, monkeypatch):
    """LG_COORDINATOR naming the lab's coordinator, as labgrid users set it."""
    monkeypatch.setenv("LG_COORDINATOR", lab.coordinator)
    yield lab.coordinator
    assert lab.holder("hil-chip") is None, "a test left hil-chip held"


# -- without a lab --------------------------------------------------------------------------------
def test_the_spec_names_a_place():
    spec = BoardSpec.parse("labgrid:esp32-bench-3")
    assert (spec.kind, spec.place, spec.port, str(spec)) == ("labgrid", "esp32-bench-3", None, "labgrid:esp32-bench-3")
    with pytest.raises(BoardConnectionError, match=r"^labgrid: name the place: labgrid:PLACE") as info:
        BoardSpec.parse("labgrid")
    assert "\n" not in str(info.value)


def test_importing_the_package_and_plugin_leaves_labgrid_unloaded():
    code = ("import sys, micropython_hil, micropython_hil.plugin, micropython_hil.board; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('labgrid', 'grpc')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("labgrid") is not None, reason="labgrid is installed here")
def test_a_labgrid_board_without_labgrid_says_what_to_install():
    with pytest.raises(BoardConnectionError, match=r"^labgrid:bench-1: cannot import labgrid .*"
                                                   r"pip install 'pytest-micropython-hil\[labgrid\]'$") as info:
        open_board("labgrid:bench-1")
    assert "\n" not in str(info.value)


def test_a_runs_name_tells_a_finished_run_from_a_live_one_and_leaves_others_alone():
    me = Holder.of(f"bench-pc/{owner_user('alice')}")
    assert me.alive and me.here and me.mine and not me.stale and me.pid == os.getpid()
    tether = Tether("test-place-owner")
    try:
        gone = tether.popen([sys.executable, "-c", "import time; time.sleep(30)"])
        name = f"bench-pc/{owner_user('alice', pid=gone.pid)}"  # the name it acquired under, alive
        assert Holder.of(name).alive and not Holder.of(name).stale
        gone.kill()
        gone.wait()
    finally:
        tether.close()
    dead = Holder.of(name)
    assert dead.stale and dead.pid == gone.pid and "is over" in dead.describe()
    machine = owner_user("alice").split("-")[2]
    elsewhere = Holder.of(f"other-pc/alice+hil-{gone.pid}-{'0' * 8 if machine != '0' * 8 else '1' * 8}-12345678")
    assert not elsewhere.here and not elsewhere.stale and "another machine" in elsewhere.describe()
    person = Holder.of("bench-pc/bob")
    assert person.pid is None and not person.stale and "labgrid-client acquire" in person.describe()


# -- on the loopback lab --------------------------------------------------------------------------
def test_a_place_is_a_board_exec_files_and_firmware(coordinator, lab):
    with open_board("labgrid:hil-chip") as board:
        assert isinstance(board, LabgridBoard) and isinstance(board, SerialBoard) and board.kind == "labgrid"
        assert lab.holder("hil-chip") == board.hold.identity
        assert "+hil-" in board.hold.identity and board.hold.serial_url.startswith("rfc2217://127.0.0.1:")
        assert board.eval("6 * 7") == 42
        with pytest.raises(BoardException, match="ZeroDivisionError"):
            board.exec("1 / 0")
        report = board.deploy(HEARTBEAT)
        assert sorted(report.uploaded + report.skipped) == ["config.py", "main.py"]
        assert board.get("main.py") == (HEARTBEAT / "main.py").read_bytes()
        run = board.run("main.py")
        board.console.expect(r"heartbeat firmware on \w+", timeout=10)
        board.console.expect(r"beat 3 uptime_ms \d+", timeout=5)
        run.stop()
        assert board.eval("1 + 1") == 2  # the REPL is back after the firmware
    assert lab.holder("hil-chip") is None


def test_the_place_alias_and_the_exporters_own_ser2net(coordinator, lab):
    with open_board("labgrid:chip") as board:  # an alias of hil-chip
        assert board.hold.place == "hil-chip"
    with open_board("labgrid:hil-chip-default") as board:  # a RawSerialPort: ser2net started on acquire
        assert board.eval("2 + 2") == 4
        assert not board.hold.has_power()
        board.reset(hard=True)  # no power switch: RTS over RFC 2217 (a pty ignores it)
        assert board.eval("3 + 3") == 6
    assert lab.holder("hil-chip-default") is None


def test_a_hard_reset_power_cycles_the_chip_through_the_places_switch(coordinator, lab):
    with open_board("labgrid:hil-chip") as board:
        board.exec("left_in_ram = 1")
        before, switched = lab.chip_pid(), len(lab.power.log)
        board.reset(hard=True)
        assert lab.power.log[switched:] == ["0", "1"]
        assert lab.chip_pid() != before, "the chip was not power-cycled"
        with pytest.raises(BoardException, match="NameError"):
            board.exec("left_in_ram")
        assert board.eval("1 + 1") == 2
        assert "[hil] power-cycling place hil-chip" in board.console.text


def test_a_held_place_is_refused_in_one_line_naming_its_holder(coordinator, lab):
    with open_board("labgrid:hil-chip") as first:
        with pytest.raises(BoardConnectionError) as info:
            open_board("labgrid:hil-chip")
        message = str(info.value)
        assert message.startswith(f"labgrid:hil-chip: place hil-chip on {coordinator} is held by {first.hold.identity} "
                                  "(this run")
        assert "--labgrid-wait" in message and "\n" not in message
        assert lab.holder("hil-chip") == first.hold.identity  # the refused open released nothing


def test_a_second_board_waits_for_the_place(coordinator, lab):
    first = open_board("labgrid:hil-chip")
    closer = threading.Timer(1.0, first.close)
    closer.start()
    try:
        start = time.monotonic()
        with LabgridBoard.open("hil-chip", wait=20) as second:
            assert 0.9 < time.monotonic() - start < 15
            assert second.eval("2") == 2
    finally:
        closer.join()
        first.close()


def test_a_users_lock_and_another_machines_are_left_alone(coordinator, lab):
    lab.client("-p", "hil-chip", "acquire", user="alice")
    try:
        with pytest.raises(BoardConnectionError, match=r"is held by \S+/alice \(not a micropython-hil run"):
            open_board("labgrid:hil-chip")
        assert lab.holder("hil-chip").endswith("/alice")
    finally:
        lab.client("-p", "hil-chip", "release", user="alice")
    elsewhere = "bob+hil-1-00000000-00000000"  # a run of another machine: its pid means nothing here
    lab.client("-p", "hil-chip", "acquire", user=elsewhere)
    try:
        with pytest.raises(BoardConnectionError, match=r"pid 1 on another machine"):
            open_board("labgrid:hil-chip")
        assert lab.holder("hil-chip").endswith(elsewhere)
    finally:
        lab.client("-p", "hil-chip", "release", user=elsewhere)


HOLDER = ("from micropython_hil.board import open_board; import time; b = open_board('labgrid:hil-chip'); "
          "print(b.hold.identity, flush=True); time.sleep(60)")


def start_holder(tether):
    """Another run holding hil-chip: a Python process with a labgrid board open; its identity."""
    child = tether.popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    identity = child.stdout.readline().strip()
    assert f"+hil-{child.pid}-" in identity
    return child, identity


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_sigkilled_runs_agent_releases_its_place(coordinator, lab):
    tether = Tether("test-labgrid-kill")
    try:
        child, identity = start_holder(tether)
        with pytest.raises(BoardConnectionError, match=rf"held by {re.escape(identity)} \(a micropython-hil run, "
                                                       rf"pid {child.pid} on this machine, still running\)"):
            open_board("labgrid:hil-chip")
        child.kill()
        child.wait()
        child.stdout.close()
        wait_until(lambda: lab.holder("hil-chip") is None)  # its agent's parent-death signal: released
    finally:
        tether.close()


def test_the_lock_of_a_run_killed_with_its_agent_is_cleared_by_the_next(coordinator, lab):
    tether = Tether("test-labgrid-kill")
    try:
        child, identity = start_holder(tether)
        for pid in children(child.pid):  # the agent first, so nothing releases the place
            os.kill(pid, signal.SIGKILL)
        child.kill()
        child.wait()
        child.stdout.close()
    finally:
        tether.close()
    assert lab.holder("hil-chip") == identity, "the killed run's lock should still be there"
    with open_board("labgrid:hil-chip") as board:
        assert board.hold.cleared == {"acquired": identity, "pid": child.pid}
        assert f"cleared the lock of a run that is over ({identity})" in board.console.text
        assert board.eval("1 + 1") == 2


def test_errors_are_one_line_naming_the_place_or_the_coordinator(coordinator, lab):
    with pytest.raises(BoardConnectionError, match=r"^labgrid:nowhere: no place 'nowhere' on the labgrid coordinator "
                                                   rf"at {coordinator} \(places: hil-chip, hil-chip-default, hil-empty\)"):
        open_board("labgrid:nowhere")
    with pytest.raises(BoardConnectionError, match=r"^labgrid:hil-empty: place hil-empty has no serial port"):
        open_board("labgrid:hil-empty")
    assert lab.holder("hil-empty") is None  # acquired, found empty, released
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(BoardConnectionError, match=rf"^labgrid:hil-chip: cannot reach the labgrid coordinator at {dead} "):
        LabgridBoard.open("hil-chip", coordinator=dead)
    for text in ("labgrid:nowhere", "labgrid:hil-empty"):
        with pytest.raises(BoardConnectionError) as info:
            open_board(text)
        assert "\n" not in str(info.value)
