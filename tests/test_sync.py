"""Synchronisation between boards and the test over the broker: barriers and shared values, the
test's side (micropython_hil.fleet.Sync) and the boards' (firmware_under_test/common/lib/hilsync.py)."""

import threading
from pathlib import Path

import pytest

from micropython_hil import Firmware
from micropython_hil.errors import BoardException, HarnessError
from micropython_hil.fleet.sync import Sync, SyncTimeout, new_base

COMMON_LIB = Path(__file__).resolve().parents[1] / "firmware_under_test" / "common" / "lib"

PARTY = """\
import json
import hilsync
me = json.load(open("hil_config.json"))["extra"]["hilsync"]["me"]
sync = hilsync.Sync()
print("ready", me)
sync.barrier("ready")
print("passed ready", me)
if me == "a":
    sync.set("from_a", {"n": 1})
print(me, "reads", sync.get("from_a"), sync.get("threshold"))
sync.wait("phase", 2)
sync.barrier("done")
print("done", me)
sync.close()
"""

LONER = """\
import hilsync
sync = hilsync.Sync()
sync.barrier("together", timeout_ms=1500)
"""


def firmware(tmp_path: Path, code: str) -> Path:
    folder = tmp_path / "fw"
    folder.mkdir(exist_ok=True)
    (folder / "main.py").write_text(code)
    (folder / "manifest.json").write_text(f'{{"packages": ["umqtt.simple"], "include": ["{COMMON_LIB}"]}}')
    return folder


def test_two_parties_of_the_test_meet_at_barriers_and_share_values(broker):
    base = new_base()
    one, two = (Sync(broker, base, ["one", "two"], me=me) for me in ("one", "two"))
    try:
        arrived = threading.Thread(target=two.barrier, args=("start",))
        arrived.start()
        assert one.barrier("start") == 1
        arrived.join()
        one.set("answer", {"value": 42})
        assert two.get("answer") == {"value": 42}
        again = threading.Thread(target=one.barrier, args=("start",))
        again.start()
        assert two.barrier("start") == 2  # a barrier is passed again and again: rounds
        again.join()
    finally:
        one.close()
        two.close()
    assert broker.retained(f"{base}/#") == {}  # what the test left is cleared


def test_a_barrier_timeout_names_who_did_not_arrive(broker):
    sync = Sync(broker, new_base(), ["relay", "switch", "test"],
                describe=lambda p: f"{p} (board {p}[unix])" if p != "test" else p)
    try:
        with pytest.raises(SyncTimeout, match=r"barrier 'go' \(round 1\): relay \(board relay\[unix\]\), switch "
                                              r"\(board switch\[unix\]\) did not arrive within 0.3 s; arrived: test"):
            sync.barrier("go", timeout=0.3)
        with pytest.raises(SyncTimeout, match=r"value 'nothing' was not set within 0.2 s"):
            sync.get("nothing", timeout=0.2)
        with pytest.raises(HarnessError, match="no MQTT wildcards"):
            sync.set("a/#", 1)
    finally:
        sync.close()


@pytest.mark.boards(a=None, b=None)
def test_boards_and_the_test_pass_barriers_and_read_each_others_values(boards, tmp_path):
    fw = firmware(tmp_path, PARTY)
    for role in boards:
        role.start(firmware=Firmware(fw))
    for role in boards:
        role.console.expect(f"ready {role.name}")
    boards.sync.set("threshold", 25)
    # Both boards wait at the barrier for the test, which has not arrived yet.
    assert not any("passed ready" in role.console.text for role in boards)
    assert boards.sync.barrier("ready") == 1
    for role in boards:
        role.console.expect(f"passed ready {role.name}")
        role.console.expect(rf"{role.name} reads {{'n': 1}} 25")
    assert boards.sync.get("from_a") == {"n": 1}
    boards.sync.set("phase", 2)
    boards.sync.barrier("done")
    for role in boards:
        role.console.expect(f"done {role.name}")
        role.device.run.wait(10)


@pytest.mark.boards(a=None, b=None)
def test_a_board_and_the_test_time_out_naming_the_board_that_did_not_arrive(boards, tmp_path):
    boards.a.start(firmware=Firmware(firmware(tmp_path, LONER)))
    # b never starts: the board's barrier names it (and the test, which does not come either) ...
    with pytest.raises(BoardException, match=r"SyncTimeout: barrier together \(round 1\): b, test did not arrive "
                                             r"within 1500 ms"):
        boards.a.device.run.wait(15)
    # ... and the test's names it with its board and client id.
    with pytest.raises(SyncTimeout, match=rf"b \(board b\[unix\], client {boards.b.client_id}\) did not arrive"):
        boards.sync.barrier("together", timeout=0.5)
