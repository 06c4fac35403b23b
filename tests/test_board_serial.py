"""Board over a serial port: the serial code path proved through a real pty to a unix-port process."""

import errno
import os
from types import SimpleNamespace

import pytest
import serial

from micropython_hil.board import transport
from micropython_hil.board.board import Board, open_board
from micropython_hil.errors import BoardConnectionError, BoardException
from micropython_hil.board.transport import ReplTransport, find_esp32_port


def test_serial_board_over_a_pty_runs_the_same_api(pty_board_process):
    with Board.serial(pty_board_process.device) as b:
        assert b.kind == "serial" and b.name == f"serial:{pty_board_process.device}"
        assert b.eval("[i * i for i in range(4)]") == [0, 1, 4, 9]
        b.put_bytes(b"print('fw up')\nraise OSError(19)\n", "main.py")
        run = b.run()
        b.console.expect("fw up")
        with pytest.raises(BoardException, match=r"OSError: \[Errno 19\] ENODEV"):
            run.wait(5)
        assert b.eval("'still here'") == "still here"


def test_soft_reset_over_serial_uses_ctrl_d_and_the_board_answers_soft_reboot(pty_board_process):
    with Board.serial(pty_board_process.device) as b:
        b.exec("marker = 1")
        old_pid = pty_board_process.pid
        pty_board_process.on_exit = lambda code: _soft_reboot(pty_board_process, code)
        b.reset()
        assert pty_board_process.pid != old_pid
        assert b.eval("'marker' in globals()") is False


def _soft_reboot(port, code):
    """What Board.unix does on Ctrl-D: relaunch on the same pty and answer like a chip."""
    assert code == 0
    port.write_console(b"soft reboot\r\n")
    port.start()
    port.type_input(b"\r\x01")


def test_a_device_path_that_is_not_dev_pts_works_too(pty_board_process, tmp_path):
    link = tmp_path / "ttyESP32"
    link.symlink_to(pty_board_process.device)
    with Board.serial(str(link)) as b:
        assert b.eval("1 + 2") == 3


def test_hard_reset_on_a_port_without_modem_lines_is_a_clear_error(pty_board_process):
    with Board.serial(pty_board_process.device) as b:
        with pytest.raises(BoardConnectionError, match="no RTS/DTR lines"):
            b.reset(hard=True)


def test_absent_port_is_one_clear_line():
    with pytest.raises(BoardConnectionError, match=r"serial port /dev/ttyNOPE0 does not exist"):
        open_board("serial:/dev/ttyNOPE0")


def test_busy_port_names_the_port(pty_board_process):
    with Board.serial(pty_board_process.device):
        with pytest.raises(BoardConnectionError, match="is busy"):
            Board.serial(pty_board_process.device)


def test_permission_denied_says_what_to_do(monkeypatch, pty_board_process):
    # Root ignores file modes, so the kernel's EACCES is simulated at pyserial's open().
    def refuse(self):
        raise serial.SerialException(errno.EACCES, f"could not open port {self.port}: [Errno 13] Permission denied")
    monkeypatch.setattr(serial.Serial, "open", refuse)
    with pytest.raises(BoardConnectionError, match="dialout"):
        ReplTransport(pty_board_process.device)


def test_serial_spec_without_a_port_and_unknown_kinds_are_rejected():
    with pytest.raises(BoardConnectionError, match="name the port"):
        open_board("serial")
    with pytest.raises(BoardConnectionError, match="unknown board kind"):
        open_board("jtag:0")


def test_serial_auto_picks_the_first_esp32_bridge(monkeypatch):
    ports = [SimpleNamespace(device="/dev/ttyS0", vid=None, pid=None),
             SimpleNamespace(device="/dev/ttyUSB1", vid=0x10C4, pid=0xEA60),
             SimpleNamespace(device="/dev/ttyACM0", vid=0x303A, pid=0x1001)]
    monkeypatch.setattr(transport.serial.tools.list_ports, "comports", lambda: ports)
    assert find_esp32_port() == "/dev/ttyACM0"
    monkeypatch.setattr(transport.serial.tools.list_ports, "comports", lambda: ports[:1])
    with pytest.raises(BoardConnectionError, match="no ESP32 serial port found"):
        find_esp32_port()


def test_a_board_that_goes_silent_on_serial_times_out_and_recovers(pty_board_process):
    with Board.serial(pty_board_process.device, timeout=5) as b:
        from micropython_hil.errors import BoardTimeout
        # time.sleep ignores Ctrl-C over a pty on the unix port, as a busy C call would on a chip
        with pytest.raises(BoardTimeout):
            b.exec("import time\ntime.sleep(0.01)\nwhile True:\n    pass", timeout=0.5)
        os.kill(pty_board_process.pid, 2)  # the bench operator presses reset / sends SIGINT
        assert b.eval("'ok'") == "ok"


def test_a_reboot_during_a_command_is_told_apart_from_a_hang(pty_board_process):
    from micropython_hil.errors import BoardRebooted
    with Board.serial(pty_board_process.device, timeout=1) as b:
        # As an ESP32's ROM prints after a watchdog reset, then stays silent at the REPL.
        code = "import sys\nsys.stdout.write('rst:0x7 (TG0WDT_SYS_RESET),boot:0x13\\r\\n')\nwhile True: pass"
        with pytest.raises(BoardRebooted, match="TG0WDT_SYS_RESET"):
            b.exec(code)
        os.kill(pty_board_process.pid, 2)
        assert b.eval("'up'") == "up"
