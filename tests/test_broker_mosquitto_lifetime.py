"""mosquitto's lifetime is the harness's: it dies with a SIGKILLed pytest, outlives the thread
that started it, and its folder goes on every stop (normal or not)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from micropython_hil import tempdirs
from micropython_hil.mqtt import BrokerError, MosquittoBroker

pytestmark = pytest.mark.skipif(MosquittoBroker.available() is not None,
                                reason=MosquittoBroker.available() or "")


def ends_within(pid: int, timeout: float) -> bool:
    """True once process `pid` has ended (a zombie awaiting its reaper counts), waiting up to
    `timeout`: a pidfd becomes readable when the process exits, so nothing is polled."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(pidfd)


@pytest.fixture
def temp_root(tmp_path, monkeypatch) -> Path:
    """The system temp folder, as far as this test's brokers know: here, to be inspected."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def leftovers(root: Path) -> list[Path]:
    return sorted(root.glob("hil-mosquitto-*"))


def launchers() -> int:
    return sum(t.name == "hil-mosquitto-launcher" for t in threading.enumerate())


def test_mosquitto_dies_with_a_sigkilled_harness(tmp_path):
    code = ("import time\n"
            "from micropython_hil.mqtt import MosquittoBroker\n"
            "broker = MosquittoBroker().start()\n"
            "print(broker.pid, flush=True)\n"
            "time.sleep(60)\n")
    harness = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, TMPDIR=str(tmp_path)))
    try:
        pid = int(harness.stdout.readline())
        assert not ends_within(pid, 0), "mosquitto should run while its harness does"
    finally:
        harness.kill()
        harness.wait()
        harness.stdout.close()
    assert ends_within(pid, 3.0), f"mosquitto (pid {pid}) outlived its SIGKILLed harness"
    # The killed harness could not remove its folder; the next session's sweep does.
    [left] = leftovers(tmp_path)
    assert tempdirs.remove_stale(tmp_path) == [left]


def test_mosquitto_outlives_the_threads_that_start_and_restart_it(temp_root):
    broker = MosquittoBroker()
    try:
        for step in (broker.start, broker.restart):
            helper = threading.Thread(target=step)
            helper.start()
            helper.join()
            # the kernel signals mosquitto when the thread that forked it ends: not this one
            assert not ends_within(broker.pid, 0.3), f"mosquitto died with the thread that ran {step.__name__}"
            with broker.client() as client:
                client.ping()
    finally:
        broker.stop()
    assert leftovers(temp_root) == []


def test_the_folder_goes_on_a_normal_stop_and_on_one_after_mosquitto_died(temp_root):
    threads = launchers()
    broker = MosquittoBroker().start()
    assert len(leftovers(temp_root)) == 1 and launchers() == threads + 1
    pid = broker.pid
    broker.stop()
    assert ends_within(pid, 1) and leftovers(temp_root) == [] and launchers() == threads

    broker = MosquittoBroker().start()
    os.kill(broker.pid, 9)  # mosquitto gone behind the harness's back
    broker.stop()
    assert leftovers(temp_root) == [] and launchers() == threads

    broker = MosquittoBroker().start()
    broker.mute_pings()  # frozen (SIGSTOP): stop must still end it
    pid = broker.pid
    broker.stop()
    assert ends_within(pid, 1) and leftovers(temp_root) == [] and launchers() == threads


def test_the_folder_goes_when_mosquitto_cannot_start(temp_root):
    threads = launchers()
    with pytest.raises(BrokerError, match="mosquitto could not listen"):
        MosquittoBroker(executable="false").start()  # exits at once, never listens
    assert leftovers(temp_root) == [] and launchers() == threads
