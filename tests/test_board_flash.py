"""A real board's files at the start of each test (--board-flash, --board-keep), on a board that
keeps them between tests and runs as a chip does: a simulated ESP32 served on a pty
(board/server.py), opened by the child run as `--board serial:PTY`. Its flash is a folder here,
so what the board holds is read and written from the host, beside the harness."""

from pathlib import Path

import pytest

from micropython_hil.board.board import Board
from micropython_hil.board.server import BoardServer
from micropython_hil.board.unix_port import wait_gone
from micropython_hil.sim.simulator import Simulator

TWO_TESTS = """
def test_first(board):
    board.put_bytes(b"X = 1\\n", "left_by_first.py")
    board.mkdir("data/deep")
    board.put_bytes(b"1,2\\n", "data/deep/log.csv")
    board.exec("leftover = 1")

def test_second(board):
    assert not board.exists("left_by_first.py") and not board.exists("data")
    assert board.eval("'leftover' in globals()") is False
"""


@pytest.fixture
def served_chip():
    """A simulated ESP32 on a pty, as a chip on a serial port: (the pty, its flash folder)."""
    with Simulator() as sim, Board.unix(sim=sim, name="flash-chip") as chip:
        server = BoardServer(chip).start()
        pid = chip.port.pid
        try:
            yield server.device, chip.root
        finally:
            server.close()
    assert pid is None or wait_gone(pid), f"micropython pid {pid} outlived its test"


def fill(flash: Path) -> None:
    """What a user's board might hold before a run: their files, an old app, a folder of data."""
    for name, text in {"secrets.py": "PASSWORD = 'x'\n", "main.py": "print('old app')\n",
                       "lib/mine.py": "A = 1\n", "lib/theirs.py": "B = 2\n", "logs/today.txt": "old\n"}.items():
        (flash / name).parent.mkdir(parents=True, exist_ok=True)
        (flash / name).write_text(text)


def names(flash: Path) -> list[str]:
    return sorted(p.relative_to(flash).as_posix() + ("/" if p.is_dir() else "") for p in flash.rglob("*"))


def test_each_test_starts_from_an_empty_flash_but_the_kept_paths(pytester, served_chip, tmp_path):
    device, flash = served_chip
    fill(flash)
    pytester.makepyfile(test_two=TWO_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--board", f"serial:{device}",
                                           "--board-keep", "secrets.py", "--board-keep", "lib/mine.py",
                                           "--hil-artifacts", str(tmp_path / "arts"), timeout=120)
    result.assert_outcomes(passed=2)
    assert names(flash) == ["lib/", "lib/mine.py", "secrets.py"]
    assert (flash / "secrets.py").read_text() == "PASSWORD = 'x'\n"
    first = (tmp_path / "arts" / "test_two.py_test_first" / "console.log").read_text()
    assert "[hil] flash cleaned: removed lib/theirs.py, logs/, main.py; kept lib/mine.py, secrets.py" in first, first
    second = (tmp_path / "arts" / "test_two.py_test_second" / "console.log").read_text()
    assert "removed data/, left_by_first.py;" in second, second


def test_the_ini_file_names_what_to_keep(pytester, served_chip, tmp_path):
    device, flash = served_chip
    fill(flash)
    pytester.makeini("[pytest]\nhil_board_keep = secrets.py logs\n")
    pytester.makepyfile(test_one="def test_one(board):\n    assert board.ls() == ['logs', 'secrets.py']\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--board", f"serial:{device}",
                                           "--hil-artifacts", str(tmp_path / "arts"), timeout=120)
    result.assert_outcomes(passed=1)
    assert names(flash) == ["logs/", "logs/today.txt", "secrets.py"]


def test_keep_leaves_every_file(pytester, served_chip, tmp_path):
    device, flash = served_chip
    fill(flash)
    before = names(flash)
    pytester.makepyfile(test_two=TWO_TESTS.replace("assert not", "assert"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--board", f"serial:{device}",
                                           "--board-flash", "keep", "--hil-artifacts", str(tmp_path / "arts"),
                                           "-k", "first", timeout=120)
    result.assert_outcomes(passed=1, deselected=1)
    assert names(flash) == sorted(before + ["data/", "data/deep/", "data/deep/log.csv", "left_by_first.py"])
    assert "flash cleaned" not in (tmp_path / "arts" / "test_two.py_test_first" / "console.log").read_text()


def test_a_simulated_board_is_not_cleaned(pytester, tmp_path):
    pytester.makepyfile(test_one="def test_one(board):\n    assert board.ls() == ['lib']\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--hil-artifacts", str(tmp_path / "arts"),
                                           timeout=120)
    result.assert_outcomes(passed=1)
    assert "flash cleaned" not in (tmp_path / "arts" / "test_one.py_test_one" / "console.log").read_text()


def test_kept_paths_are_read_as_paths_and_a_misspelt_one_is_reported(pytester, served_chip, tmp_path):
    device, flash = served_chip
    fill(flash)
    pytester.makepyfile(test_one="def test_one(board):\n    assert board.ls() == ['lib', 'secrets.py']\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--board", f"serial:{device}",
                                           "--board-keep", "./secrets.py", "--board-keep", "/lib//mine.py",
                                           "--board-keep", "secret.py", "--hil-artifacts", str(tmp_path / "arts"),
                                           timeout=120)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*--board-keep secret.py: not on the board, nothing kept there*"])
    assert names(flash) == ["lib/", "lib/mine.py", "secrets.py"]
    log = (tmp_path / "arts" / "test_one.py_test_one" / "console.log").read_text()
    assert "kept lib/mine.py, secrets.py; asked to keep but not on the board: secret.py" in log, log
