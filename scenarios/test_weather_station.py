"""Weather station scenarios. They run unchanged on the simulated board (--board unix) and on a
real ESP32 (--board serial:PORT); the ones that set sensor values or move the clock need the
simulator and skip on hardware."""

import pytest

from micropython_hil.sim.simulator import chip_heap_on_host, shim_heap_bytes

pytestmark = pytest.mark.firmware("firmware_under_test/weather_station")


def interval_for(board, simulated_s=600, real_s=5):
    """The reading interval a scenario uses: the firmware's real ten minutes where the board's
    clock is virtual, a few seconds on hardware (where an hour takes an hour)."""
    return simulated_s if board.sim is not None else real_s


@pytest.mark.requires_sim
def test_boot_to_online_with_telemetry_matching_the_sensor(sim, start_firmware, telemetry, firmware):
    sim.sensor("bme280", address=0x76).set(temperature=21.5, pressure=1013.25, humidity=40.0)
    sim.adc(34).set(1.9)  # behind the 1:2 divider: a 3.8 V battery
    device = start_firmware(extra={"interval_s": 5})
    status = telemetry.expect(device.topic("status"), timeout=15)
    assert status.payload == b"online"
    telemetry.assert_retained(device.topic("status"), "online")
    reading = telemetry.expect(device.topic("telemetry"), schema=firmware.schema("telemetry"), timeout=15).json()
    assert reading["temperature_c"] == pytest.approx(21.5, abs=0.01)
    assert reading["pressure_hpa"] == pytest.approx(1013.25, abs=0.01)
    assert reading["humidity_pct"] == pytest.approx(40.0, abs=0.1)
    assert reading["battery_v"] == pytest.approx(3.8, abs=0.01)


@pytest.mark.sim(time="fast")
def test_telemetry_schema_and_rate_in_board_time(board, start_firmware, telemetry, firmware):
    every = interval_for(board)
    device = start_firmware(extra={"interval_s": every})
    topic = device.topic("telemetry")
    readings = telemetry.collect(7, topic, timeout=60)  # one board hour: readings at 0, 10, ... 60 min
    telemetry.validate(readings, firmware.schema("telemetry"))
    # In board time: the RTC stamp in the payload, and the simulator's clock at each publish.
    telemetry.assert_rate(topic, every=every, tolerance=0.01, clock="board", time_field="ts", time_unit=1)
    if board.sim is not None:
        telemetry.assert_rate(topic, every=every, tolerance=0.01, clock="board")
    assert telemetry.assert_sequence(topic)[:7] == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.sim(time="fast")
def test_retained_command_changes_the_interval(board, start_firmware, telemetry):
    every = interval_for(board)
    device = start_firmware(extra={"interval_s": every})
    topic = device.topic("telemetry")
    telemetry.collect(2, topic, timeout=30)
    mark = telemetry.mark()
    telemetry.publish(device.topic("cmd"), {"interval_s": every // 5}, retain=True)
    board.console.expect(rf"interval now {every // 5} s", timeout=15)
    after = telemetry.collect(4, topic, timeout=60, since=mark)
    stamps = [m.json()["ts"] for m in after]
    assert [b - a for a, b in zip(stamps[1:], stamps[2:])] == [every // 5, every // 5]
    telemetry.publish(device.topic("cmd"), b"", retain=True)  # clear the retained command


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_wifi_outage_loses_and_duplicates_no_reading(sim, start_firmware, telemetry, firmware):
    device = start_firmware(extra={"interval_s": 60})
    topic = device.topic("telemetry")
    telemetry.collect(2, topic, timeout=30)
    sim.wifi.drop(refuse_for=300)  # five minutes without an access point, in board time
    board_console = device.console
    board_console.expect("link: down", timeout=15)
    board_console.expect(r"link: online \(connect #2\)", timeout=60)
    telemetry.collect(10, topic, timeout=60)
    values = telemetry.assert_sequence(topic, min_count=10)
    assert values == sorted(values), f"readings out of order: {values}"
    telemetry.validate(topic, firmware.schema("telemetry"))


@pytest.mark.sim(time="real")
def test_broker_restart_loses_and_duplicates_no_reading(board, broker, start_firmware, telemetry):
    if not hasattr(broker, "restart") or broker.kind == "external":
        pytest.skip("needs a broker the harness runs (amqtt or mosquitto)")
    device = start_firmware(extra={"interval_s": 1})
    topic = device.topic("telemetry")
    telemetry.collect(2, topic, timeout=20)
    broker.restart(keep_sessions=True, downtime=3.0)
    device.console.expect("link: down", timeout=15)
    device.console.expect(r"link: online \(connect #2\)", timeout=30)
    first_after = telemetry.collect(1, topic, since=telemetry.mark(), timeout=15)[0].json()["seq"]
    telemetry.collect(first_after + 2, topic, timeout=20)
    values = telemetry.assert_sequence(topic, min_count=first_after + 2)
    assert values == sorted(values)


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_deep_sleep_cycles_keep_the_sequence_and_wake_by_timer(sim, board, start_firmware, telemetry):
    device = start_firmware(extra={"interval_s": 600, "deep_sleep": True})
    topic = device.topic("telemetry")
    readings = telemetry.collect(3, topic, timeout=30)
    assert [m.json()["seq"] for m in readings] == [1, 2, 3]
    assert [m.json()["ts"] for m in readings][1:] == [readings[0].json()["ts"] + 600, readings[0].json()["ts"] + 1200]
    board.console.expect(r"rst:0x5 \(DEEPSLEEP_RESET\)", timeout=10)
    assert sum(1 for r in sim.resets if r.get("cause") == "deepsleep") >= 2
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"sleeping", timeout=10)


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_runs_within_the_esp32_heap(sim, board, start_firmware, telemetry):
    """A day of readings on the chip's heap (the simulated board has the ESP32's heap in GC
    blocks): no MemoryError, and the heap left afterwards is no smaller than after the first."""
    device = start_firmware(extra={"interval_s": 600, "queue_max": 32})
    topic = device.topic("telemetry")
    telemetry.collect(144, topic, timeout=60)  # one board day at ten-minute readings
    telemetry.assert_sequence(topic, min_count=144)
    device.run.stop()
    assert "MemoryError" not in board.console.text
    board.exec("import gc\ngc.collect()")
    free = board.eval("gc.mem_free()")
    assert free > 16 * 1024, f"only {free} bytes of heap left after a day of readings"
    total = board.eval("gc.mem_free() + gc.mem_alloc()")
    chip = chip_heap_on_host(sim.profile.heapsize) + shim_heap_bytes()
    assert abs(total - chip) < 8 * 1024, f"board heap {total} bytes, the {sim.profile.name} profile's is {chip}"
