"""pytest runs with `--board labgrid:PLACE` on the loopback lab (tests/labgrid_lab): the scenarios
pass through the place, two runs never share it, and the place is given back however a run ends
(passed, failed, Ctrl-C, SIGTERM, SIGKILL). Skipped, saying why, where labgrid or ser2net is missing."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from micropython_hil.board import open_board
from micropython_hil.deploy import packages
from micropython_hil.tether import Tether

sys.path.insert(0, str(Path(__file__).resolve().parent / "labgrid_lab"))
from loopback_lab import LoopbackLab, missing  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PLACE = "hil-chip"
SECOND_PLACE = "hil-chip2"

HOLD_THE_BOARD = """
import time
from pathlib import Path

def test_holds_the_board(board):
    assert board.eval("1 + 1") == 2
    Path("holding").write_text(board.name)
    time.sleep(60)
"""


@pytest.fixture(scope="module")
def lab():
    why = missing()
    if why:
        pytest.skip(why)
    with LoopbackLab(chips=2) as the_lab:  # hil-chip2: the second place of the roles test
        yield the_lab


@pytest.fixture
def free_after(lab):
    """The places are free after the test, whatever its child runs did."""
    yield
    deadline = time.monotonic() + 10
    for place in (PLACE, SECOND_PLACE):
        while lab.holder(place) is not None:
            assert time.monotonic() < deadline, f"{place} still held by {lab.holder(place)}"
            time.sleep(0.2)


def board_args(lab, tmp_path):
    return ["-p", "no:cacheprovider", "--board", f"labgrid:{PLACE}", "--labgrid-coordinator", lab.coordinator,
            "--hil-artifacts", str(tmp_path / "artifacts")]


def test_the_boot_and_command_scenarios_pass_through_a_labgrid_place(pytester, lab, tmp_path, monkeypatch, free_after):
    # The child run has its own HOME: it reads MicroPython packages from this run's cache, offline.
    monkeypatch.setenv("MICROPYTHON_HIL_PACKAGES", str(packages.cache_dir()))
    # Every boot and home-automation (command) scenario that does not need the simulator. The
    # place's chip keeps its files between tests, as a chip does (the module's earlier tests left
    # theirs too): each test starts from an empty flash because the harness cleans it
    # (--board-flash clean, the default), which the redeploy and boot-state scenarios rely on.
    result = pytester.runpytest_subprocess(
        f"{REPO}/scenarios/test_boot.py", f"{REPO}/scenarios/test_home_automation.py", "--rootdir", str(REPO),
        "-rs", *board_args(lab, tmp_path), timeout=300)
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 14 and not outcomes.get("failed") and not outcomes.get("errors"), outcomes
    result.stdout.fnmatch_lines(["SKIPPED * needs the simulator (--board unix)*"])  # the sim-only scenarios
    arts = tmp_path / "artifacts"
    redeploy_log = next(arts.glob("*test_redeploy_skips_unchanged_files/console.log")).read_text()
    assert "[hil] flash cleaned: removed config.py, main.py" in redeploy_log, redeploy_log  # the test before's
    reboot_log = next(arts.glob("*relay_state_survives*/console.log")).read_text()
    assert "[hil] power-cycling place hil-chip" in reboot_log


def test_roles_on_two_places_drive_each_other(pytester, lab, tmp_path, monkeypatch, free_after):
    """--board ROLE=labgrid:PLACE: the relay node and the wall switch each on a place of their own,
    opened as one-board tests open theirs (leased, files cleaned), reset by their own power switch."""
    monkeypatch.setenv("MICROPYTHON_HIL_PACKAGES", str(packages.cache_dir()))
    result = pytester.runpytest_subprocess(
        f"{REPO}/scenarios/test_multi_board.py", "--rootdir", str(REPO), "-p", "no:cacheprovider", "-rs",
        "--board", f"relay=labgrid:{PLACE}", "--board", f"switch=labgrid:{SECOND_PLACE}",
        "--labgrid-coordinator", lab.coordinator, "--hil-artifacts", str(tmp_path / "arts"),
        "-k", "both_nodes_reboot", timeout=300)
    result.assert_outcomes(passed=1, deselected=3)
    folder = next((tmp_path / "arts").glob("*both_nodes_reboot*"))
    relay, switch = ((folder / f"console-{role}.log").read_text() for role in ("relay", "switch"))
    assert "[hil] flash cleaned" in relay and "[hil] power-cycling place hil-chip\n" in relay, relay
    assert "home node relay-r" in relay and "link: online" in relay
    assert "[hil] flash cleaned" in switch and f"[hil] power-cycling place {SECOND_PLACE}" in switch, switch
    assert "wall switch switch-r" in switch and "relay 0 is on" in switch


def test_a_failing_test_gives_the_place_back(pytester, lab, tmp_path, free_after):
    pytester.makepyfile(test_fails="""
        def test_fails(board):
            board.exec("x = 1")
            assert board.eval("x") == 2
    """)
    result = pytester.runpytest_subprocess(*board_args(lab, tmp_path), timeout=120)
    result.assert_outcomes(failed=1)


INTERRUPTIBLE_PYTEST = ("import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
                        "sys.exit(pytest.main(sys.argv[1:]))")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_run_ended_by_a_signal_gives_the_place_back(pytester, lab, tmp_path, signum, free_after):
    pytester.makepyfile(test_holds=HOLD_THE_BOARD)
    tether = Tether("test-labgrid-signal")
    try:
        # Ctrl-C raises KeyboardInterrupt in the child as at a terminal, also where this suite
        # runs in the background of a non-interactive shell (SIGINT ignored, and inherited).
        child = tether.popen([sys.executable, "-c", INTERRUPTIBLE_PYTEST, *board_args(lab, tmp_path)],
                             cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (pytester.path / "holding").exists():
            assert child.poll() is None and time.monotonic() < deadline, "the child run never held the board"
            time.sleep(0.1)
        assert lab.holder(PLACE).split("/", 1)[1].split("+hil-")[1].startswith(f"{child.pid}-")
        child.send_signal(signum)
        child.wait(timeout=60)
    finally:
        tether.close()


def test_a_second_run_is_refused_naming_the_first_then_waits_for_it(pytester, lab, tmp_path, monkeypatch, free_after):
    pytester.makepyfile(test_board="""
        def test_board(board):
            assert board.eval("2 + 2") == 4
    """)
    monkeypatch.setenv("LG_COORDINATOR", lab.coordinator)
    first = open_board(f"labgrid:{PLACE}")
    try:
        refused = pytester.runpytest_subprocess(*board_args(lab, tmp_path), timeout=120)
        refused.assert_outcomes(errors=1)
        refused.stdout.fnmatch_lines([f"E * labgrid:{PLACE}: place {PLACE} on {lab.coordinator} is held by "
                                      f"{first.hold.identity} (a micropython-hil run, pid {os.getpid()} on this "
                                      "machine, still running); wait for it with --labgrid-wait SECONDS"])
        threading.Timer(2.0, first.close).start()
        waited = pytester.runpytest_subprocess(*board_args(lab, tmp_path), "--labgrid-wait", "60", timeout=120)
        waited.assert_outcomes(passed=1)
    finally:
        first.close()
