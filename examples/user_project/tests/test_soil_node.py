"""The team's tests of its soil-moisture node, on a simulated ESP32 from the installed harness."""

import pytest

from harness.soil import DRY_BELOW, moisture   # the team's own `harness` package


def test_the_board_runs_micropython(board):
    assert board.exec("print(6 * 7)") == "42\n"
    assert board.eval("__import__('sys').implementation.name") == "micropython"


def test_the_simulated_chip_reports_its_profile(board, sim):
    assert board.eval("__import__('machine').unique_id()") == sim.profile.unique_id


@pytest.mark.sim(time="fast")
def test_readings_follow_the_probe_in_board_time(sim, start_firmware, telemetry, firmware):
    sim.adc(32).set(1.8)
    device = start_firmware(extra={"interval_s": 300})
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    readings = telemetry.collect(4, device.topic("reading"), timeout=30)
    telemetry.validate(readings, firmware.schema("reading"))
    assert {r.json()["moisture"] for r in readings} == {moisture(1.8)}
    telemetry.assert_rate(device.topic("reading"), every=300, tolerance=0.01, clock="board")
    telemetry.assert_sequence(device.topic("reading"))


@pytest.mark.sim(time="fast")
def test_a_drying_probe_is_reported_dry(sim, start_firmware, telemetry):
    sim.adc(32).set(1.2)
    device = start_firmware(extra={"interval_s": 60})
    first = telemetry.expect(device.topic("reading"), timeout=15).json()
    assert first["dry"] is False
    sim.adc(32).set(2.4)   # the ADC reads at most about 2.45 V at 11 dB
    dry = telemetry.expect(device.topic("reading"), where=lambda m: m.json()["dry"], timeout=15).json()
    assert dry["moisture"] == moisture(2.4) < DRY_BELOW


def test_the_broker_is_the_tests_own(broker, telemetry):
    telemetry.publish("farm/ping", b"1")
    assert telemetry.expect("farm/ping", timeout=5).payload == b"1"
