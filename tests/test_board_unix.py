"""Board over the unix port: real micropython processes behind real ptys."""

import os
import signal
import threading
import time

import pytest

from micropython_hil.board.board import Board
from micropython_hil.errors import (BoardCrashed, BoardError, BoardException, BoardMemoryError, BoardTimeout,
                            FirmwareError, MicroPythonNotFound)
from micropython_hil.board.unix_port import wait_gone


@pytest.fixture
def b():
    board = Board.unix(timeout=5)
    yield board
    pid = board.port.pid
    board.close()
    assert pid is None or wait_gone(pid)


def test_exec_returns_output_and_eval_returns_values(b):
    assert b.exec("print('hello', 6 * 7)") == "hello 42\n"
    assert b.eval("{'a': [1, 2.5, None], 'b': b'\\x00'}") == {"a": [1, 2.5, None], "b": b"\x00"}


def test_eval_of_a_non_literal_says_so(b):
    with pytest.raises(BoardError, match="not a Python literal"):
        b.eval("object()")


def test_board_exception_carries_the_whole_traceback(b):
    b.exec("def inner():\n    raise ValueError('bad reading')\n")
    with pytest.raises(BoardException) as info:
        b.exec("inner()")
    err = info.value
    assert err.exc_type == "ValueError" and err.exc_message == "bad reading"
    assert "Traceback (most recent call last)" in err.traceback and "in inner" in err.traceback
    assert b.eval("1") == 1  # the board is still usable


def test_memory_error_is_told_apart(b):
    with pytest.raises(BoardMemoryError, match="MemoryError"):
        b.exec("x = bytearray(1 << 40)")


def test_a_hang_is_a_timeout_and_the_board_recovers(b):
    start = time.monotonic()
    with pytest.raises(BoardTimeout, match="no answer within 1 s"):
        b.exec("while True:\n    pass", timeout=1)
    assert time.monotonic() - start < 4
    assert b.eval("'alive'") == "alive"


def test_files_put_get_ls_mkdir_rm(b, tmp_path):
    data = bytes(range(256)) * 40  # binary, larger than one upload chunk
    b.mkdir("/data/logs")
    b.put_bytes(data, "/data/logs/blob.bin")
    assert b.get("data/logs/blob.bin") == data
    assert b.ls("data") == ["logs"] and b.ls("/data/logs") == ["blob.bin"]
    assert b.exists("data/logs/blob.bin") and not b.exists("data/nothing")
    local = tmp_path / "cfg.json"
    local.write_text('{"x": 1}')
    b.put(local)
    assert b.get("cfg.json") == b'{"x": 1}'
    b.rm("data", recursive=True)
    assert "data" not in b.ls()
    with pytest.raises(BoardException, match="OSError"):
        b.get("no/such/file")


def test_deploy_uploads_then_skips_unchanged_files(b, tmp_path):
    fw = tmp_path / "fw"
    (fw / "lib" / "pkg").mkdir(parents=True)
    (fw / "main.py").write_text("print('main')\n")
    (fw / "lib" / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (fw / "__pycache__").mkdir()
    (fw / "__pycache__" / "junk.pyc").write_bytes(b"x")
    first = b.deploy(fw)
    assert sorted(first.uploaded) == ["lib/pkg/__init__.py", "main.py"]
    (fw / "lib" / "pkg" / "__init__.py").write_text("VALUE = 2\n")
    second = b.deploy(fw)
    assert second.uploaded == ["lib/pkg/__init__.py"] and second.skipped == ["main.py"]
    assert b.exec("import pkg\nprint(pkg.VALUE)").strip() == "2"
    with pytest.raises(FirmwareError, match="does not exist"):
        b.deploy(tmp_path / "missing")


def test_run_streams_console_and_reports_the_firmware_traceback(b):
    b.put_bytes(b"import time\nfor i in range(3):\n    print('tick', i)\n    time.sleep_ms(20)\n"
                b"raise RuntimeError('sensor gone')\n", "main.py")
    run = b.run()
    assert b.console.expect(r"tick (\d)").group(1) == "0"
    assert b.console.expect(r"tick (\d)").group(1) == "1"  # expect() reads forward
    with pytest.raises(BoardException, match="sensor gone") as info:
        run.wait(5)
    assert 'File "main.py", line 5' in info.value.traceback
    assert b.eval("2 + 2") == 4
    assert "tick 2" in b.console.lines


def test_expect_fails_fast_with_the_traceback_when_the_firmware_crashed(b):
    b.put_bytes(b"print('boot')\nimport nosuchmodule\n", "main.py")
    b.run()
    start = time.monotonic()
    with pytest.raises(BoardException, match="nosuchmodule"):
        b.console.expect("online", timeout=10)
    assert time.monotonic() - start < 3


def test_expect_timeout_shows_the_console_tail(b):
    b.put_bytes(b"import time\nprint('waiting for wifi')\nwhile True: time.sleep_ms(10)\n", "main.py")
    b.run()
    with pytest.raises(BoardTimeout, match="(?s)'online' not seen.*waiting for wifi"):
        b.console.expect("online", timeout=0.5)


def test_stop_interrupts_a_running_firmware_and_exec_is_refused_meanwhile(b):
    b.put_bytes(b"import time\nwhile True:\n    print('loop')\n    time.sleep_ms(50)\n", "main.py")
    run = b.run()
    b.console.expect("loop")
    with pytest.raises(BoardError, match="owns the REPL"):
        b.exec("1")
    run.stop()
    assert not run.running
    assert b.eval("'back'") == "back"


def test_reset_restarts_the_process_and_keeps_the_filesystem(b):
    b.exec("marker = 1")
    b.put_bytes(b"kept", "state.txt")
    old_pid = b.port.pid
    b.reset()
    assert b.port.pid != old_pid and wait_gone(old_pid)
    assert b.eval("'marker' in globals()") is False
    assert b.get("state.txt") == b"kept"


def test_a_process_that_exits_is_reported_and_reset_brings_the_board_back(b):
    with pytest.raises(BoardCrashed, match="exited with code 3"):
        b.exec("import sys\nsys.exit(3)")  # reported here, or, if the output won the race,
        b.eval("1")                         # at the next command
    b.reset()
    assert b.eval("5") == 5


def test_a_killed_process_mid_command_fails_fast_not_at_the_timeout(b):
    b.timeout = 30
    pid = b.port.pid
    threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
    start = time.monotonic()
    with pytest.raises(BoardCrashed, match="exited with code -9"):
        b.exec("import time\ntime.sleep(5)")
    assert time.monotonic() - start < 3
    b.reset()
    assert b.eval("6") == 6


def test_soft_reboot_by_ctrl_d_answers_like_a_chip(b):
    old_pid = b.port.pid
    b.transport.enter_raw_repl(soft_reset=True, timeout_overall=5)  # mpremote's own soft reset
    assert b.port.pid != old_pid
    assert b.eval("'rebooted'") == "rebooted"


def test_missing_micropython_binary_is_one_clear_line(tmp_path):
    with pytest.raises(MicroPythonNotFound, match="--micropython /no/such/micropython: no such file"):
        Board.unix(micropython="/no/such/micropython")
    with pytest.raises(MicroPythonNotFound, match="not an executable"):
        Board.unix(micropython=str(tmp_path))


def test_a_binary_that_is_not_micropython_times_out_cleanly(tmp_path):
    fake = tmp_path / "micropython"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    with pytest.raises(BoardTimeout, match="no raw REPL prompt"):
        Board.unix(micropython=str(fake), timeout=0.5)


def test_closed_board_refuses_commands(b):
    b.close()
    with pytest.raises(BoardError, match="closed"):
        b.exec("1")


def test_a_simulated_reset_from_the_repl_is_reported_once_and_the_board_is_back():
    from micropython_hil.errors import BoardRebooted
    from micropython_hil.sim.simulator import Simulator
    with Simulator() as sim, Board.unix(sim=sim, timeout=5) as board:
        board.exec("import machine\nx = 1")
        with pytest.raises(BoardRebooted, match=r"reset during the command \(rst:0xc \(SW_CPU_RESET\)"):
            board.exec("machine.reset()")
        assert board.eval("__import__('machine').reset_cause() == __import__('machine').HARD_RESET") is True
        assert board.eval("'x' in globals()") is False
