"""Shared fixtures of the harness's own tests."""

import pytest

from micropython_hil.board import unix_port



@pytest.fixture
def pty_board_process(tmp_path):
    """A unix-port process behind a pty, without a Board: stands in for a chip on a serial port."""
    port = unix_port.UnixPort(tmp_path, name="pty-chip")
    port.start()
    yield port
    pid = port.pid
    port.close()
    assert pid is None or unix_port.wait_gone(pid), f"micropython pid {pid} outlived its test"
