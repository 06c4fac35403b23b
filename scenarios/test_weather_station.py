"""Weather station scenarios. They run unchanged on the simulated board (--board unix) and on a
real ESP32 (--board serial:PORT); the ones that set sensor values or move the clock need the
simulator and skip on hardware.

What the station promises, each at its boundary: readings that match the sensor over its whole
range and any chip's trimming; one reading per interval on the board's clock, without drift, and
no burst after a delay; interval commands taken from 1 s to a day and refused outside (word by
word: wrong types, a bool, a missing field, not JSON); readings kept through outages, in order,
with the oldest dropped and counted when the buffer is full; the sequence across deep sleep, and
a fresh one when RTC memory holds garbage; defaults when the config file is missing or corrupt;
a session kept alive between readings; reconnects that back off from 1 s to a minute."""

import re
import time

import pytest

from micropython_hil.deploy.device_config import build_config
from micropython_hil.mqtt.outage import Outage
from micropython_hil.sim.simulator import chip_heap_on_host, shim_heap_bytes

pytestmark = pytest.mark.firmware("firmware_under_test/weather_station")


def interval_for(board, simulated_s=600, real_s=5):
    """The reading interval a scenario uses: the firmware's real ten minutes where the board's
    clock is virtual, a few seconds on hardware (where an hour takes an hour)."""
    return simulated_s if board.sim is not None else real_s


def stamps(telemetry, topic, since=0):
    """The readings' ts (board seconds), by sequence number, each once."""
    return {m.json()["seq"]: m.json()["ts"] for m in telemetry.select(topic, since=since)}


def online_board_s(sim, device):
    """Board seconds at which the device published "online", each time it came online."""
    topic = device.topic("status")
    return [p.board_time_us / 1e6 for p in list(sim.publishes) if p.topic == topic and p.payload_len == 6]


def retries(console_text):
    """The reconnect delays the link announced ("retry in N ms"), in order."""
    return [int(ms) for ms in re.findall(r"retry in (\d+) ms", console_text)]


@pytest.mark.requires_sim
def test_boot_to_online_with_telemetry_matching_the_sensor(sim, start_firmware, telemetry, firmware):
    sim.sensor("bme280", address=0x76).set(temperature=21.5, pressure=1013.25, humidity=40.0)
    sim.adc(34).set(1.9)  # behind the 1:2 divider: a 3.8 V battery
    device = start_firmware(extra={"interval_s": 5})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    status = telemetry.expect(device.topic("status"), timeout=15)
    assert status.payload == b"online" and status.retain and status.qos == 1
    telemetry.assert_retained(device.topic("status"), "online")
    reading = telemetry.expect(device.topic("telemetry"), schema=firmware.schema("telemetry"), timeout=15)
    assert reading.qos == 1 and not reading.retain
    reading = reading.json()
    assert reading["seq"] == 1 and reading["dropped"] == 0
    assert reading["temperature_c"] == pytest.approx(21.5, abs=0.01)
    assert reading["pressure_hpa"] == pytest.approx(1013.25, abs=0.01)
    assert reading["humidity_pct"] == pytest.approx(40.0, abs=0.1)
    assert reading["battery_v"] == pytest.approx(3.8, abs=0.001)


# (temperature degC, pressure hPa, humidity %RH, battery V) over the sensor's whole range
SENSOR_CASES = [(85.0, 1100.0, 100.0, 4.2), (25.37, 1013.25, 45.6, 3.301), (-12.5, 650.0, 99.9, 2.5),
                (0.0, 900.5, 12.3, 3.7)]
# Another chip's trimming words: negative ones take the driver's sign-extension paths. (With
# these, the driest air the datasheet formula gives at -40 degC is 3.2 %RH.)
OTHER_CHIP = {"dig_T1": 27000, "dig_T2": 27000, "dig_T3": -500, "dig_P1": 37000, "dig_P2": -10000,
              "dig_P3": 3000, "dig_P4": 3000, "dig_P5": -100, "dig_P7": 15000, "dig_P8": -15000,
              "dig_P9": 5000, "dig_H1": 80, "dig_H2": 350, "dig_H4": -10, "dig_H5": -5, "dig_H6": -20}
# Signed words at the ends of their range (32767, -32768): the sign extension's boundaries.
WORD_LIMITS_CHIP = {"dig_T2": 32767, "dig_P2": -32768, "dig_P8": -32768, "dig_P9": 32767}
# The 12- and 8-bit humidity words at theirs (dig_H5 -2048 and 2047, dig_H6 -128 and 127). (With
# these, the datasheet formula cannot give every humidity at the extremes: mid-range cases only.)
MID_RANGE = [(25.37, 1013.25, 45.6, 3.301), (-12.5, 650.0, 99.9, 2.5), (0.0, 900.5, 12.3, 3.7)]
HUMIDITY_LIMITS_LOW = {"dig_H2": 800, "dig_H5": -2048, "dig_H6": -128}
HUMIDITY_LIMITS_HIGH = {"dig_H5": 2047, "dig_H6": 127}


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
@pytest.mark.parametrize("trim, cases", [
    (None, [(-40.0, 300.0, 0.0, 3.0), *SENSOR_CASES]), (OTHER_CHIP, [(-40.0, 300.0, 5.0, 3.0), *SENSOR_CASES]),
    (WORD_LIMITS_CHIP, [(-40.0, 300.0, 5.0, 3.0), *SENSOR_CASES]),
    (HUMIDITY_LIMITS_LOW, MID_RANGE), (HUMIDITY_LIMITS_HIGH, MID_RANGE)],
    ids=["bosch-example-chip", "other-chip", "word-limits-chip", "humidity-limits-low", "humidity-limits-high"])
def test_readings_match_the_sensor_across_its_range(sim, start_firmware, telemetry, firmware, wait_board, trim,
                                                    cases):
    sensor = sim.sensor("bme280", address=0x76)
    if trim:
        sensor.trim(**trim)  # before the firmware starts: the driver reads the words once
    device = start_firmware(extra={"interval_s": 1})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("telemetry")
    telemetry.collect(1, topic, timeout=15)
    for t, p, h, battery in cases:
        sensor.set(temperature=t, pressure=p, humidity=h)
        sim.adc(34).set(battery / 2)
        changed_s = wait_board(0)  # the board has the new values from here on
        reading = telemetry.expect(topic, where=lambda m: m.json()["ts"] > changed_s + 1, timeout=15)
        telemetry.validate([reading], firmware.schema("telemetry"))
        r = reading.json()
        assert r["temperature_c"] == pytest.approx(t, abs=0.01), (r, t)
        assert r["pressure_hpa"] == pytest.approx(p, abs=0.01), (r, p)
        assert r["humidity_pct"] == pytest.approx(h, abs=0.1), (r, h)
        assert r["battery_v"] == pytest.approx(battery, abs=0.001), (r, battery)
        # The documented precision: 0.01 degC, 0.01 hPa, 0.1 %RH, 1 mV.
        for field, digits in (("temperature_c", 2), ("pressure_hpa", 2), ("humidity_pct", 1), ("battery_v", 3)):
            assert round(r[field], digits) == r[field], (field, r)


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_a_chip_without_pressure_trimming_reads_zero_pressure_without_crashing(sim, start_firmware, telemetry):
    """dig_P1 = 0 (an unprogrammed chip): the datasheet's pressure formula would divide by zero;
    the driver reports 0 hPa instead, and temperature and humidity still read right."""
    sim.sensor("bme280", address=0x76).trim(dig_P1=0)
    sim.sensor("bme280", address=0x76).set(temperature=21.5, humidity=40.0)
    device = start_firmware(extra={"interval_s": 1})
    device.console.expect(r"link: online", timeout=15)
    r = telemetry.collect(2, device.topic("telemetry"), timeout=15)[1].json()
    assert r["pressure_hpa"] == 0.0 and r["temperature_c"] == pytest.approx(21.5, abs=0.01), r
    assert r["humidity_pct"] == pytest.approx(40.0, abs=0.1) and device.run.running


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_defaults_one_reading_a_minute_from_boot(sim, start_firmware, telemetry):
    device = start_firmware()
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("telemetry")
    readings = telemetry.collect(6, topic, timeout=15)
    ts = [m.json()["ts"] for m in readings]
    assert [m.json()["seq"] for m in readings] == [1, 2, 3, 4, 5, 6]
    assert [b - a for a, b in zip(ts, ts[1:])] == [60] * 5, ts
    assert sim.wait_until(lambda: online_board_s(sim, device), timeout=10)
    assert ts[0] <= 1 and online_board_s(sim, device)[0] < 1.0, "the first reading and the link at boot"
    assert re.search(r"weather station \S+ interval 60 s", device.console.text)


@pytest.mark.sim(time="fast")
def test_telemetry_schema_and_rate_in_board_time(board, start_firmware, telemetry, firmware):
    every = interval_for(board)
    device = start_firmware(extra={"interval_s": every})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("telemetry")
    readings = telemetry.collect(7, topic, timeout=60)  # one board hour: readings at 0, 10, ... 60 min
    telemetry.validate(readings, firmware.schema("telemetry"))
    # In board time: the RTC stamp in the payload, and the simulator's clock at each publish.
    telemetry.assert_rate(topic, every=every, tolerance=0.01, clock="board", time_field="ts", time_unit=1)
    if board.sim is not None:
        telemetry.assert_rate(topic, every=every, tolerance=0.01, clock="board")
        ts = [m.json()["ts"] for m in readings]
        assert [b - a for a, b in zip(ts, ts[1:])] == [every] * 6, f"the schedule drifts: {ts}"
    assert telemetry.assert_sequence(topic)[:7] == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.sim(time="fast")
def test_retained_command_changes_the_interval(board, start_firmware, telemetry):
    every = interval_for(board)
    device = start_firmware(extra={"interval_s": every})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("telemetry")
    telemetry.collect(2, topic, timeout=30)
    mark = telemetry.mark()
    telemetry.publish(device.topic("cmd"), {"interval_s": every // 5}, retain=True)
    try:
        board.console.expect(rf"interval now {every // 5} s", timeout=15)
        after = telemetry.collect(4, topic, timeout=60, since=mark)
        stamps_after = [m.json()["ts"] for m in after]
        assert [b - a for a, b in zip(stamps_after[1:], stamps_after[2:])] == [every // 5, every // 5]
    finally:
        telemetry.publish(device.topic("cmd"), b"", retain=True)  # clear the retained command


BAD_INTERVALS = [b'{"interval_s": 0}', b'{"interval_s": 86401}', b'{"interval_s": -5}',
                 b'{"interval_s": "60"}', b'{"interval_s": 1.5}', b'{"interval_s": true}',
                 b'{"interval_s": null}', b'{"every": 60}', b'[60]', b"not json", b'{"interval_s": [60]}']


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_interval_commands_are_taken_from_one_second_to_a_day_and_refused_outside(sim, start_firmware, telemetry,
                                                                                   wait_board):
    device = start_firmware(extra={"interval_s": 600})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("telemetry")
    telemetry.collect(1, topic, timeout=15)
    for payload in BAD_INTERVALS:
        telemetry.publish(device.topic("cmd"), payload)
        device.console.expect(r"cmd rejected: .*", timeout=15)
    mark = telemetry.mark()
    ts = [m.json()["ts"] for m in telemetry.collect(3, topic, since=mark, timeout=15)]
    assert [b - a for a, b in zip(ts, ts[1:])] == [600, 600], f"a refused command changed the interval: {ts}"
    assert "interval now" not in device.console.text
    # A day: from the command on, no reading for a day (not the one the old schedule had next).
    telemetry.publish(device.topic("cmd"), {"interval_s": 86400})
    device.console.expect(r"interval now 86400 s", timeout=15)
    time.sleep(0.2)  # a reading taken just before the command has arrived by now
    last = max(stamps(telemetry, topic).values())
    wait_board(1300)
    late = [t for t in stamps(telemetry, topic).values() if t > last]
    assert not late, f"readings at {late} after the interval became a day (last before: {last})"
    # A second: the next reading within a second or two of the command, then one a second.
    telemetry.publish(device.topic("cmd"), {"interval_s": 1})
    device.console.expect(r"interval now 1 s", timeout=15)
    now_s = wait_board(0)
    telemetry.publish(device.topic("cmd"), {"interval_s": 1})  # the interval it has: nothing to change
    ts = [m.json()["ts"] for m in telemetry.collect(6, topic, where=lambda m: m.json()["ts"] > last, timeout=15)]
    assert ts[0] <= now_s + 2 and [b - a for a, b in zip(ts, ts[1:])] == [1] * 5, (now_s, ts)
    wait_board(2)
    assert device.console.text.count("interval now") == 2 and "Traceback" not in device.console.text


@pytest.mark.sim(time="real")
def test_commands_are_taken_between_readings(board, start_firmware, telemetry):
    """The loop idles at most a second at a time: a command is taken within a second or two of
    arriving, not at the next reading ten minutes away."""
    device = start_firmware(extra={"interval_s": 600})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    telemetry.collect(1, device.topic("telemetry"), timeout=15)
    time.sleep(1)
    telemetry.publish(device.topic("cmd"), {"interval_s": 300})
    board.console.expect(r"interval now 300 s", timeout=3)


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_the_session_stays_alive_between_readings(start_firmware, telemetry):
    """Keepalive 1 s, in wall time at the broker: the station pings while it idles between
    readings, so it is never dropped, and a command after a few quiet seconds is taken."""
    device = start_firmware(keepalive=1, extra={"interval_s": 600})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    time.sleep(2)  # past 1.5 x keepalive, when the broker drops a silent client
    telemetry.publish(device.topic("cmd"), {"interval_s": 120})
    device.console.expect(r"interval now 120 s", timeout=10)
    assert "link: down" not in device.console.text and "connect #2" not in device.console.text
    telemetry.expect_none(device.topic("status"), where=lambda m: m.payload == b"offline", within=0)


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_wifi_outage_loses_and_duplicates_no_reading(sim, start_firmware, telemetry, firmware):
    device = start_firmware(extra={"interval_s": 60})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("telemetry")
    telemetry.collect(2, topic, timeout=30)
    with Outage(telemetry, device) as outage:
        sim.wifi.drop(refuse_for=300)  # five minutes without an access point, in board time
        device.console.expect("link: down", timeout=15)
        # The outage ends when the link is back: a reading in flight at the drop may have
        # reached the broker after the console said "down", and may come again (QoS 1).
        device.console.expect(r"link: online \(connect #2\)", timeout=60)
    telemetry.collect(10, topic, timeout=60)
    # QoS 1: only a reading in flight when the link died (its PUBACK lost) may come twice.
    values = outage.assert_no_loss("telemetry", min_after=8)
    assert values == sorted(values), f"readings out of order: {values}"
    by_seq = stamps(telemetry, topic)
    ts = [by_seq[seq] for seq in sorted(by_seq)]
    # Readings taken offline keep their own time and the schedule holds: one a minute, through
    # the outage and after it. A reading due while the link is trying to join the access point
    # waits for that attempt (at most its 10 s WiFi timeout), but the next is due on time again.
    late = [t - (ts[0] + 60 * i) for i, t in enumerate(ts)]
    assert all(0 <= s <= 10 for s in late), f"readings off the one-a-minute schedule: {ts}"
    assert all(m.json()["dropped"] == 0 for m in telemetry.select(topic))
    telemetry.validate(topic, firmware.schema("telemetry"))
    # Each failed attempt doubles the wait before the next, from one second.
    assert retries(device.console.text)[:4] == [1000, 2000, 4000, 8000], retries(device.console.text)


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_a_delayed_reading_does_not_start_a_burst(sim, start_firmware, telemetry):
    """Readings every 3 s; a WiFi outage holds the loop in 10 s attempts to join the access
    point: the readings due meanwhile are not taken back to back afterwards, the schedule skips."""
    device = start_firmware(extra={"interval_s": 3})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("telemetry")
    telemetry.collect(2, topic, timeout=15)
    sim.wifi.drop(refuse_for=60)
    device.console.expect(r"link: online \(connect #2\)", timeout=60)
    telemetry.collect(30, topic, timeout=30)
    by_seq = stamps(telemetry, topic)
    ts = [by_seq[seq] for seq in sorted(by_seq)]
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    assert min(gaps) >= 3, f"readings closer than the interval: {ts}"
    # ... nor a stall: a reading waits at most for one 10 s attempt to join the access point.
    assert max(gaps) <= 15, f"the schedule stalled after the delay: {ts}"


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
@pytest.mark.parametrize("extra, outage_s, kept", [({"queue_max": 3}, 600, 3), ({}, 2400, 32)],
                         ids=["queue-of-3", "default-queue-of-32"])
def test_a_full_buffer_drops_the_oldest_readings_and_counts_them(sim, start_firmware, telemetry, extra,
                                                                  outage_s, kept):
    """Readings taken while the link is down wait in a bounded queue: when it is full the oldest
    goes, and every reading sent after that says how many were dropped. The newest `kept`
    readings of the outage arrive, in order, once the link is back."""
    device = start_firmware(extra={"interval_s": 60, **extra})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("telemetry")
    telemetry.collect(2, topic, timeout=15)
    sim.wifi.drop(refuse_for=outage_s)
    device.console.expect(r"link: online \(connect #2\)", timeout=60)
    # The simulator's record of that publish comes over its own channel: wait for it.
    assert sim.wait_until(lambda: len(online_board_s(sim, device)) >= 2, timeout=10)
    back_s = online_board_s(sim, device)[1]
    telemetry.collect(1, topic, where=lambda m: m.json()["ts"] > back_s + 120, timeout=30)
    readings = list({m.json()["seq"]: m.json() for m in telemetry.select(topic)}.values())  # each once
    seqs = [r["seq"] for r in readings]
    before = next(i for i, seq in enumerate(seqs, 1) if seq != i) - 1  # delivered before the gap
    after = readings[before:]
    first = after[0]["seq"]
    assert [r["seq"] for r in after] == list(range(first, first + len(after))), f"not in order: {seqs}"
    missing = first - before - 1
    # A reading in flight when the link died reached the broker but was never acknowledged: the
    # station cannot know, and counts it as dropped if the full queue lets it go.
    dropped = {r["dropped"] for r in after}
    assert missing > 0 and len(dropped) == 1 and dropped <= {missing, missing + 1}, (missing, dropped, seqs)
    queued = [r for r in after if r["ts"] <= back_s]
    assert len(queued) == kept, f"{len(queued)} readings of the outage arrived, the queue holds {kept}"


@pytest.mark.sim(time="real")
def test_broker_restart_loses_and_duplicates_no_reading(board, broker, start_firmware, telemetry):
    if not hasattr(broker, "restart") or broker.kind == "external":
        pytest.skip("needs a broker the harness runs (amqtt or mosquitto)")
    device = start_firmware(extra={"interval_s": 1})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("telemetry")
    telemetry.collect(2, topic, timeout=20)
    broker.restart(keep_sessions=True, downtime=1.5)
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
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("telemetry")
    readings = telemetry.collect(3, topic, timeout=30)
    assert [m.json()["seq"] for m in readings] == [1, 2, 3]
    assert [m.json()["ts"] for m in readings][1:] == [readings[0].json()["ts"] + 600, readings[0].json()["ts"] + 1200]
    board.console.expect(r"rst:0x5 \(DEEPSLEEP_RESET\)", timeout=10)
    assert sum(1 for r in sim.resets if r.get("cause") == "deepsleep") >= 2
    sleeping = telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"sleeping", timeout=10)
    assert sleeping.retain and sleeping.qos == 1
    # It says goodbye before sleeping: the broker never publishes its last will.
    telemetry.expect_none(device.topic("status"), where=lambda m: m.payload == b"offline", within=0)


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
@pytest.mark.parametrize("rtc, first", [(b"41", 42), (b"garbage", 1)], ids=["kept", "garbage"])
def test_the_sequence_resumes_from_rtc_memory(board, start_firmware, telemetry, rtc, first):
    """RTC memory keeps the sequence number across deep sleep; what is there at boot is taken if
    it is a number, and a fresh sequence starts if it is not."""
    board.exec(f"import machine\nmachine.RTC().memory({rtc!r})")
    device = start_firmware(extra={"interval_s": 60})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    readings = telemetry.collect(2, device.topic("telemetry"), timeout=15)
    assert [m.json()["seq"] for m in readings] == [first, first + 1]


@pytest.mark.requires_sim
@pytest.mark.parametrize("config", [None, b"{not json"], ids=["missing", "corrupt"])
def test_a_missing_or_corrupt_config_file_starts_with_the_defaults(board, firmware, config):
    firmware.deploy(board)
    if config is not None:
        board.put_bytes(config, "hil_config.json")
    elif board.exists("hil_config.json"):
        board.rm("hil_config.json")
    board.run("main.py")
    board.console.expect(r"weather station weather-1 interval 60 s", timeout=10)
    time.sleep(0.5)
    assert "Traceback" not in board.console.text


@pytest.mark.requires_sim
def test_without_a_topic_prefix_the_device_uses_dev_and_its_client_id(board, broker, firmware, telemetry):
    config = build_config(broker, "ws-noprefix", topic_prefix="", extra={"interval_s": 5})
    firmware.deploy(board, config)
    board.run("main.py")
    telemetry.expect("dev/ws-noprefix/status", where=lambda m: m.payload == b"online", timeout=15)
    telemetry.expect("dev/ws-noprefix/telemetry", timeout=15)


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_runs_within_the_esp32_heap(sim, board, start_firmware, telemetry):
    """A day of readings on the chip's heap (the simulated board has the ESP32's heap in GC
    blocks): no MemoryError, and the heap left afterwards is no smaller than after the first.
    Nor does the schedule drift over the day: the last reading is 143 intervals after the first."""
    device = start_firmware(extra={"interval_s": 600, "queue_max": 32})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("telemetry")
    readings = telemetry.collect(144, topic, timeout=60)  # one board day at ten-minute readings
    telemetry.assert_sequence(topic, min_count=144)
    assert readings[143].json()["ts"] - readings[0].json()["ts"] == 143 * 600
    device.run.stop()
    assert "MemoryError" not in board.console.text
    board.exec("import gc\ngc.collect()")
    free = board.eval("gc.mem_free()")
    assert free > 16 * 1024, f"only {free} bytes of heap left after a day of readings"
    total = board.eval("gc.mem_free() + gc.mem_alloc()")
    chip = chip_heap_on_host(sim.profile.heapsize) + shim_heap_bytes()
    assert abs(total - chip) < 8 * 1024, f"board heap {total} bytes, the {sim.profile.name} profile's is {chip}"


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_a_sensor_that_stops_answering_costs_readings_not_the_station(sim, start_firmware, telemetry, wait_board):
    """An I2C fault (the BME280 NACKs) skips the readings due meanwhile; the station lives on and
    the readings after it continue the sequence, on the same schedule."""
    device = start_firmware(extra={"interval_s": 60})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("telemetry")
    telemetry.collect(2, topic, timeout=15)
    sim.fail_i2c(0x76)
    device.console.expect("sensor error:", timeout=15)
    wait_board(180)
    sim.recover_i2c(0x76)
    mark = telemetry.mark()
    telemetry.collect(3, topic, since=mark, timeout=15)
    by_seq = stamps(telemetry, topic)
    seqs = sorted(by_seq)
    assert seqs == list(range(1, len(seqs) + 1)), f"the sequence has a gap or a repeat: {seqs}"
    gaps = [by_seq[b] - by_seq[a] for a, b in zip(seqs, seqs[1:])]
    assert all(g % 60 == 0 for g in gaps) and max(gaps) >= 180, f"off the schedule: {gaps}"
    assert device.run.running and "Traceback" not in device.console.text
