"""What the reference firmware's board has attached, for the simulated board: a real bench has
these parts wired; the simulator needs to be told. On hardware this does nothing."""

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
