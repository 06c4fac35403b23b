"""The `hil` command, run as users run it."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def hil(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "micropython_hil.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_boards_lists_the_unix_board():
    result = hil("boards")
    assert result.returncode == 0 and result.stdout.startswith("unix          simulated ESP32 (")


def test_exec_prints_the_boards_output():
    result = hil("exec", "print(6 * 7)")
    assert result.returncode == 0 and result.stdout == "42\n"


def test_run_streams_the_firmware_console():
    result = hil("run", "firmware_under_test/heartbeat", "--seconds", "0.5")
    assert result.returncode == 0
    assert "heartbeat firmware on" in result.stdout and "beat 2 uptime_ms" in result.stdout


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    result = hil("run", str(tmp_path / "nope"))
    assert result.returncode == 2 and result.stderr.strip() == f"hil: firmware folder {tmp_path / 'nope'} does not exist"
    result = hil("--micropython", "/no/mp", "exec", "1")
    assert result.returncode == 2 and result.stderr.strip() == "hil: --micropython /no/mp: no such file"
