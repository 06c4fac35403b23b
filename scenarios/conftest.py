"""What the reference firmware's board has attached, for the simulated board: a real bench has
these parts wired; the simulator needs to be told. On hardware this does nothing.

Also `wait_board`: wait until the board's own clock has moved on (board time, where it is virtual)."""

import time

import pytest


@pytest.fixture(autouse=True)
def bench_wiring(request):
    """Default sensor values for every scenario; a test sets its own on top."""
    if "board" not in request.fixturenames:
        return
    board = request.getfixturevalue("board")
    if board.sim is None:
        return
    board.sim.sensor("bme280", address=0x76).set(temperature=20.0, pressure=1000.0, humidity=50.0)
    board.sim.adc(34).set(1.9)   # weather station battery through its 1:2 divider: 3.8 V
    board.sim.adc(36).set(1.0)   # industrial monitor input: well below its alarm threshold


@pytest.fixture
def wait_board(board):
    """wait_board(seconds, timeout=60): until the board's clock moved `seconds` on (simulated
    board: its clock, however fast it runs), or that long (hardware). Returns the board time, s."""

    def wait(seconds: float, timeout: float = 60.0) -> float:
        if board.sim is None:
            time.sleep(seconds)
            return time.monotonic()
        board.sim.sync()  # the board reports its clock with each answer
        start = board.sim.board_time_us
        deadline = time.monotonic() + timeout
        while board.sim.board_time_us - start < seconds * 1e6:
            # No sleep here: fast time moves the board minutes per wall second; each sync is a
            # round trip (well under a millisecond) that reports the board's clock.
            assert time.monotonic() < deadline, f"board clock stuck at {board.sim.board_time_us} us"
            board.sim.sync()
        return board.sim.board_time_us / 1e6

    return wait
