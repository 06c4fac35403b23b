"""Industrial monitor timing: the 1 kHz hot loop's budget, and alarm latency end to end.

The budget is the sampling period (1000 us at rate_hz=1000): Monitor.step() must leave room for
the rest of the loop in every period, so its p99 must stay under it on the board that runs the
test. Allocation is budgeted too: an allocating hot loop makes the chip collect garbage.
"""

import pytest

pytestmark = pytest.mark.firmware("firmware_under_test/industrial_monitor")

STEP_SETUP = "app.Monitor(settings.load(app.DEFAULTS))"


@pytest.mark.hot_loop("app.Monitor.step", setup=STEP_SETUP, prelude="import app, settings",
                      budget_us=1000, budget_stat="p99", max_alloc_bytes=512, iterations=2000)
def test_monitor_step_fits_the_1khz_budget(hot_loop, board):
    if board.sim is not None:
        board.sim.adc(36).set(1.2)  # a steady signal: no alarms, the common case
    result = hot_loop()
    assert result.stats.n == 2000
    assert 0 < result.stats.median <= result.stats.p99 <= 1000
    assert result.overhead_us < 2.0


@pytest.mark.requires_sim
def test_alarm_latency_from_adc_change_to_mqtt(sim, start_firmware, telemetry, bench):
    sim.adc(36).set(0.5)
    device = start_firmware(extra={"high_mv": 1500, "hysteresis_mv": 200})
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    states = ["high", "normal"]

    def flip(i: int) -> None:
        sim.adc(36).set(2.0 if i % 2 == 0 else 0.5)

    result = bench.latency(flip, telemetry, device.topic("alarm"), repetitions=20, timeout=5,
                           where_each=lambda i: {"state": states[i % 2]}, run=device.run,
                           name="adc-to-alarm", budget_us=500_000)
    assert result.stats.n == 20
    # Every repetition arrived, within the budget.
    assert 0 < result.stats.min <= result.stats.median <= result.stats.max < 500_000
