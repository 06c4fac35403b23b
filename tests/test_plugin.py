"""The pytest plugin, run the way users run it: pytest in a subprocess on a test file."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path


from micropython_hil.board.unix_port import wait_gone


REPO = Path(__file__).resolve().parents[1]


def micropython_pids(tag: str) -> set[int]:
    """Pids of running micropython processes started under the environment tag HIL_TEST_TAG=tag
    (children inherit it: other runs' boards on this machine do not count)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"HIL_TEST_TAG={tag}".encode() in environ and any(
                arg.endswith(b"/micropython") or arg == b"micropython" for arg in argv[:2]):
            pids.add(int(entry))
    return pids


def run_pytest(pytester, *args, timeout=120):
    """pytest in a child process with the plugin loaded the way the user's install loads it."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)


def test_board_fixture_console_report_and_artifacts(pytester):
    pytester.makepyfile(test_fw="""
        def test_prints(board):
            board.put_bytes(b"print('sensor says 21.5')", "main.py")
            board.run().wait(5)
            assert board.console.expect(r"sensor says ([\\d.]+)").group(1) == "21.5"

        def test_fails(board):
            board.put_bytes(b"print('about to fail')", "main.py")
            board.run().wait(5)
            assert False, "deliberate"
    """)
    result = run_pytest(pytester, "--hil-artifacts", "arts")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*board console*", "*about to fail*"])
    logs = sorted(p.relative_to(pytester.path).as_posix() for p in (pytester.path / "arts").rglob("console.log"))
    assert logs == ["arts/test_fw.py_test_fails/console.log", "arts/test_fw.py_test_prints/console.log"]
    assert "sensor says 21.5" in (pytester.path / "arts/test_fw.py_test_prints/console.log").read_text()


def test_markers_skip_with_a_reason(pytester):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.requires_hardware
        def test_hw(board): pass

        @pytest.mark.board(kind="serial")
        def test_serial_only(): pass

        @pytest.mark.board(kind="unix")
        def test_unix_only(): pass
    """)
    result = run_pytest(pytester, "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*needs a real board: run with --board serial:PORT*",
                                 "*needs a serial board; this run uses --board unix*"])


def test_missing_binary_errors_each_test_with_one_line(pytester):
    pytester.makepyfile("def test_a(board): pass\ndef test_b(board): pass\n")
    result = run_pytest(pytester, "--micropython", "/no/such/micropython")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*MicroPythonNotFound: --micropython /no/such/micropython: no such file*"])


def test_firmware_folder_without_main_py_is_named(pytester):
    (pytester.path / "fw").mkdir()
    pytester.makepyfile("def test_a(firmware_dir): pass\n")
    result = run_pytest(pytester, "--firmware", "fw")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*FirmwareError: firmware folder */fw has no main.py*"])


def test_hung_and_crashed_boards_fail_cleanly_and_the_next_test_gets_a_working_board(pytester):
    pytester.makepyfile("""
        import os, signal

        def test_hangs(board):
            board.exec("while True:\\n    pass", timeout=1)

        def test_crashes(board):
            board.put_bytes(b"import time\\nwhile True: time.sleep_ms(10)", "main.py")
            board.run()
            os.kill(board.port.pid, signal.SIGKILL)
            board.console.expect("never", timeout=5)

        def test_next_one_works(board):
            assert board.eval("1 + 1") == 2
    """)
    tag = uuid.uuid4().hex
    os.environ["HIL_TEST_TAG"] = tag  # inherited by the child pytest and its boards
    try:
        result = run_pytest(pytester, "--board-timeout", "3")
    finally:
        del os.environ["HIL_TEST_TAG"]
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*BoardTimeout*no answer within 1 s*", "*BoardCrashed*exited with code -9*"])
    assert micropython_pids(tag) == set()


def test_module_scope_reuses_one_board_and_resets_it(pytester):
    pytester.makepyfile("""
        names = []

        def test_one(board):
            names.append(board.name)
            board.exec("leftover = 1")

        def test_two(board):
            names.append(board.name)
            assert board.eval("'leftover' in globals()") is False
            assert names[0] == names[1]
    """)
    run_pytest(pytester, "--board-scope", "module").assert_outcomes(passed=2)


def test_serial_board_option_through_a_pty(pytester, pty_board_process):
    pytester.makepyfile("""
        def test_serial(board):
            assert board.kind == "serial"
            assert board.eval("__import__('sys').implementation.name") == "micropython"
    """)
    # A bare unix-port process ends at a soft reset, where a chip reboots: its files are kept, so
    # the board is opened without the cleaning that ends in one (tests/test_board_flash.py, on a
    # served board that reboots as a chip does, covers that).
    run_pytest(pytester, "--board", f"serial:{pty_board_process.device}", "--board-flash", "keep"
               ).assert_outcomes(passed=1)


def start_pytest_until_board(pytester, pidfile: Path) -> tuple[subprocess.Popen, int]:
    """pytest in a child process, once its test has written its board's pid to `pidfile`."""
    # SIGINT as a terminal's Ctrl-C finds it, also where this suite was started in the background
    # of a non-interactive shell (which leaves SIGINT ignored, inherited by children).
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
                            cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        return proc, int(pidfile.read_text())
    except (OSError, ValueError):
        proc.kill()
        proc.wait()
        raise


def test_ctrl_c_leaves_no_micropython_process(pytester, tmp_path):
    pidfile = tmp_path / "pid"
    pytester.makepyfile(f"""
        import time

        def test_long(board):
            open({str(pidfile)!r}, "w").write(str(board.port.pid))
            board.put_bytes(b"import time\\nwhile True: time.sleep_ms(10)", "main.py")
            board.run()
            time.sleep(60)
    """)
    proc, pid = start_pytest_until_board(pytester, pidfile)
    try:
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        proc.kill()
        proc.wait()
    assert wait_gone(pid, timeout=5), f"micropython pid {pid} outlived Ctrl-C"


def test_killed_pytest_leaves_no_micropython_process(pytester, tmp_path):
    pidfile = tmp_path / "pid"
    pytester.makepyfile(f"""
        import time

        def test_long(board):
            open({str(pidfile)!r}, "w").write(str(board.port.pid))
            time.sleep(60)
    """)
    proc, pid = start_pytest_until_board(pytester, pidfile)
    try:
        proc.kill()  # SIGKILL: no teardown, no atexit; the kernel's parent-death signal cleans up
        proc.wait()
    finally:
        proc.kill()
    assert wait_gone(pid, timeout=5), f"micropython pid {pid} outlived a killed pytest"
