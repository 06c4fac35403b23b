"""Board kinds: Board.unix()/Board.serial() give UnixBoard/SerialBoard, one REPL layer under both."""

from pathlib import Path

from micropython_hil.board import Board, SerialBoard, UnixBoard
from micropython_hil.board.unix_port import wait_gone
from micropython_hil.sim.simulator import Simulator


def test_unix_boards_are_unix_board_objects_with_a_process_and_a_root():
    with Board.unix(timeout=5) as board:
        assert isinstance(board, UnixBoard) and isinstance(board, Board)
        assert board.kind == "unix" and board.sim is None
        root, pid = board.root, board.port.pid
        assert (root / "lib").is_dir()
        assert board.eval("__import__('os').getcwd()") == str(root)
    assert wait_gone(pid) and not root.exists()  # the temp root is the board's: removed at close


def test_a_given_root_is_kept_and_its_lib_is_importable(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "helper.py").write_text("ANSWER = 42\n")
    with UnixBoard.open(root=tmp_path, timeout=5) as board:
        assert board.root == Path(tmp_path)
        assert board.exec("import helper\nprint(helper.ANSWER)").strip() == "42"
    assert (tmp_path / "lib" / "helper.py").is_file()


def test_a_simulated_board_runs_under_its_simulator():
    with Simulator() as sim, Board.unix(sim=sim, timeout=5) as board:
        assert isinstance(board, UnixBoard) and board.sim is sim
        sim.pin(4).set(1)
        assert board.eval("__import__('machine').Pin(4, __import__('machine').Pin.IN).value()") == 1


def test_serial_boards_are_serial_board_objects_without_process_or_root(pty_board_process):
    with Board.serial(pty_board_process.device) as board:
        assert isinstance(board, SerialBoard) and isinstance(board, Board)
        assert board.kind == "serial"
        assert board.port is None and board.sim is None and board.root is None
        assert board.crash_reason() is None
