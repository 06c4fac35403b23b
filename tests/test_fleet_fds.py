"""No limit from file descriptors: boards are read and written with poll(), so a process holding
more than 1024 descriptors (a fleet of a hundred boards) still drives them; the soft limit is
raised when a fleet needs it."""

import os
import resource
import select
import threading
import time
import tty

import pytest
import serial

from micropython_hil.board.board import Board
from micropython_hil.board.transport import PollSerial, open_serial
from micropython_hil.errors import HarnessError
from micropython_hil.fleet import limits
from micropython_hil.sim.simulator import Simulator


@pytest.fixture
def many_fds():
    """Hold descriptors until the next ones are numbered past 1100, as in a process with a fleet."""
    limits.ensure_fds(80)
    held = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        yield held
    finally:
        for fd in held:
            os.close(fd)


def test_a_board_whose_descriptors_are_past_1024_works(many_fds):
    with Simulator() as sim, Board.unix(sim=sim) as board:
        fd = board.transport.serial.fd
        assert fd > 1024
        with pytest.raises(ValueError, match="filedescriptor out of range"):
            select.select([fd], [], [], 0)  # what pyserial's own read and write would have done
        assert board.eval("[n * n for n in range(3)]") == [0, 1, 4]
        board.put_bytes(b"import machine\nprint('pin', machine.Pin(2, machine.Pin.OUT).value())\n", "main.py")
        board.run().wait(10)
        board.console.expect(r"pin 0")


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    tty.setraw(slave)
    port = PollSerial(None, timeout=0.2)
    port.port = os.ttyname(slave)
    port.open()
    yield master, port
    port.close()
    os.close(master)
    os.close(slave)


def test_poll_serial_reads_what_came_times_out_empty_and_can_be_cancelled(pty_pair):
    master, port = pty_pair
    assert port.read(10) == b""  # the timeout passed with nothing (pyserial's PosixPollSerial raises here)
    os.write(master, b"hello")
    assert port.read(5) == b"hello"
    port.write(b"to the board")
    assert os.read(master, 100) == b"to the board"
    port.timeout = None
    threading.Timer(0.1, port.cancel_read).start()
    begin = time.monotonic()
    assert port.read(1) == b""  # a blocking read ended by cancel_read()
    assert time.monotonic() - begin < 5


def test_local_devices_are_polled_and_urls_keep_their_own_classes():
    assert isinstance(open_serial("/dev/ttyUSB9"), PollSerial)
    url = open_serial("loop://")
    assert not isinstance(url, PollSerial) and isinstance(url, serial.SerialBase)


def test_a_fleet_raises_the_soft_limit_to_the_hard_one_or_says_why_it_cannot(monkeypatch):
    set_to = []
    monkeypatch.setattr(limits.resource, "getrlimit", lambda which: (1024, 4096))
    monkeypatch.setattr(limits.resource, "setrlimit", lambda which, value: set_to.append(value))
    monkeypatch.setattr(limits, "open_fds", lambda: 40)
    assert limits.ensure_fds(50) == 1024 and set_to == []  # 40 + 50 * 16 + 64 fits
    assert limits.ensure_fds(200) == 4096 and set_to == [(4096, 4096)]
    with pytest.raises(HarnessError, match=r"a fleet of 300 boards needs about 4904 file descriptors, and this "
                                           r"process may open at most 4096 \(the hard limit\): raise it"):
        limits.ensure_fds(300)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)  # the real limits were never touched
