"""The `hil` command, run as users run it."""

import os
import subprocess
import sys
import time
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


def test_exec_runs_on_a_simulated_esp32_by_default():
    result = hil("exec", "import machine; print(machine.freq())")
    assert result.returncode == 0 and result.stdout == "160000000\n"


def test_exec_prints_the_output_before_an_exception_and_the_traceback():
    result = hil("exec", "print('before')\nraise ValueError('x')")
    assert result.returncode == 1 and result.stdout == "before\n"
    assert result.stderr.strip().endswith("ValueError: x")


def test_run_starts_the_reference_firmware_with_its_broker_and_wiring():
    result = hil("run", "firmware_under_test/weather_station", "--seconds", "3", "--time", "fast")
    assert result.returncode == 0, result.stderr
    assert "[hil] broker mqtt://127.0.0.1:" in result.stderr and "mosquitto_sub -h 127.0.0.1 -p" in result.stderr
    assert "[mqtt] hil/weather-1/status q1R online" in result.stdout
    assert '"temperature_c": 20.0' in result.stdout and '"battery_v": 3.8' in result.stdout  # the manifest's wiring


def test_run_takes_simulated_inputs_from_the_command_line():
    result = hil("run", "firmware_under_test/weather_station", "--seconds", "2", "--time", "fast",
                 "--set", "bme280@0x76:temperature=25.5", "--set", "adc:34=1.5")
    assert '"temperature_c": 25.5' in result.stdout and '"battery_v": 3.0' in result.stdout
    result = hil("run", "firmware_under_test/weather_station", "--set", "adc:99=1")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("hil: --set adc:99=1: ")


def test_mutate_lists_the_mutants_of_a_firmware_and_names_a_missing_folder():
    result = hil("mutate", "--list", "firmware_under_test/weather_station", "--", "scenarios", "-m", "not fuzz")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("app.py:Station.") for line in lines), lines[:5]
    assert any(line.startswith("../common/lib/link.py:Link.") for line in lines), lines[:5]
    missing = hil("mutate", "--list", "firmware_under_test/no_such_firmware")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no_such_firmware" in missing.stderr



def descendants(pid: int) -> set[int]:
    """Every living process below pid, read from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found.update(kids)
        todo.extend(kids)
    return found


def test_sigterm_during_a_mutation_run_ends_it_in_one_line_with_nothing_left():
    """A service manager's stop (or Ctrl-C) ends `hil mutate` as it would any command: one line,
    exit status 130, its child pytest runs and their boards gone."""
    proc = subprocess.Popen([sys.executable, "-m", "micropython_hil.cli", "mutate", "--workers", "1", "--no-cache",
                             "--json", os.devnull, "firmware_under_test/heartbeat", "--", "scenarios/test_boot.py"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(children := descendants(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # a child pytest and its board
        assert len(children) >= 2, "the campaign started no child run with a board"
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "hil: interrupted", err
    deadline = time.monotonic() + 10
    while (left := children & descendants(1)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"left running: {left}"
