"""Weather station scenarios: run unchanged on the simulated board and on a real ESP32
(scenarios that set sensor values or move the clock need the simulator and skip elsewhere)."""

import pytest

pytestmark = pytest.mark.firmware("firmware_under_test/weather_station")


@pytest.mark.requires_sim
def test_boot_to_online_with_telemetry_matching_the_sensor(sim, start_firmware, telemetry, firmware):
    sim.sensor("bme280", address=0x76).set(temperature=21.5, pressure=1013.25, humidity=40.0)
    sim.adc(34).set(1.9)  # behind the 1:2 divider: a 3.8 V battery
    device = start_firmware(extra={"interval_s": 5})
    status = telemetry.expect(device.topic("status"), timeout=15)
    assert status.payload == b"online" and status.retain
    reading = telemetry.expect(device.topic("telemetry"), schema=firmware.schema("telemetry"), timeout=15).json()
    assert reading["temperature_c"] == pytest.approx(21.5, abs=0.01)
    assert reading["pressure_hpa"] == pytest.approx(1013.25, abs=0.01)
    assert reading["humidity_pct"] == pytest.approx(40.0, abs=0.1)
    assert reading["battery_v"] == pytest.approx(3.8, abs=0.01)
