"""Multi-board scenarios: a wall switch (firmware_under_test/wall_switch) drives the
home-automation relay node over the broker. A press switches the relay within a latency budget;
the switch cut off from the broker keeps its presses while the relay goes on serving; both nodes
reboot and pick up where they were; and a weather station reports beside them, undisturbed.

Any role can be a real board: `--board relay=serial:/dev/ttyUSB0` (the others simulated). The
presses are made on the simulated switch's pin, so tests that press need the switch simulated.
"""

import time

import pytest

SWITCH = "firmware_under_test/wall_switch"
RELAY = "firmware_under_test/home_automation"
STATION = "firmware_under_test/weather_station"
BUTTON_PIN = 4       # the wall switch's button (pulled up: a press pulls it low)
LED_PIN = 2          # the wall switch's LED: lit while the relay it drives is on
RELAY_PIN = 26       # the home node's relay 0
LATENCY_BUDGET_S = 1.0  # a press to the relay's new state on the broker
DEBOUNCE_S = 0.15       # the switch ignores a press this soon after the last one

pytestmark = pytest.mark.boards(switch=SWITCH, relay=RELAY)


def online(telemetry, role, since=0, timeout=20):
    telemetry.expect(role.topic("status"), where=lambda m: m.payload == b"online", since=since, timeout=timeout)


def switch_settings(boards):
    """The switch pointed at the relay node: its command topic, and its state for the LED."""
    return {"target_topic": boards.relay.topic("cmd"), "state_topic": boards.relay.topic("state")}


def start_pair(boards, telemetry, **switch_start):
    boards.relay.start()
    boards.switch.start(extra=switch_settings(boards), **switch_start)
    online(telemetry, boards.relay)
    online(telemetry, boards.switch)


def press(boards):
    time.sleep(DEBOUNCE_S)  # a person's presses are this far apart at least: none is debounced away
    boards.switch.sim.pin(BUTTON_PIN).pulse(0)


def relay_state(telemetry, boards, relays, since, timeout=LATENCY_BUDGET_S):
    return telemetry.expect(boards.relay.topic("state"), where={"relays": relays}, since=since, timeout=timeout)


def led_is(boards, level, timeout=5):
    sim = boards.switch.sim
    assert sim.wait_until(lambda: sim.pin(LED_PIN).level == level, timeout), \
        f"the switch's LED is {sim.pin(LED_PIN).level}, not {level}"


@pytest.mark.requires_sim("switch")
def test_a_press_on_the_switch_switches_the_relay_within_the_budget(boards, telemetry):
    relay_fw = boards.relay.firmware
    start_pair(boards, telemetry)
    relay_state(telemetry, boards, [False, False], since=0, timeout=10)
    for presses, relays in ((1, [True, False]), (2, [False, False])):
        mark, pressed = telemetry.mark(), time.time()
        press(boards)
        state = relay_state(telemetry, boards, relays, since=mark)
        assert state.arrival - pressed < LATENCY_BUDGET_S
        command = telemetry.expect(boards.relay.topic("cmd"), since=mark)
        telemetry.validate([command], relay_fw.schema("command"))
        telemetry.validate([command], boards.switch.firmware.schema("command"))
        reply = telemetry.expect(boards.relay.topic("reply"), where={"id": command.json()["id"]}, since=mark)
        assert reply.json()["ok"] is True and reply.json()["relays"] == relays
        event = telemetry.expect(boards.switch.topic("press"), since=mark)
        telemetry.validate([event], boards.switch.firmware.schema("press"))
        assert event.json()["seq"] == presses
        if boards.relay.simulated:
            boards.relay.sim.sync()
            assert boards.relay.sim.pin(RELAY_PIN).level == relays[0]
        led_is(boards, int(relays[0]))
    assert "Traceback" not in boards.switch.console.text + boards.relay.console.text


@pytest.mark.requires_sim("switch")
def test_the_switch_cut_off_from_the_broker_keeps_its_press_while_the_relay_goes_on(boards, telemetry, netfault):
    # Only the switch dials through the fault proxy: the partition is the switch's alone.
    boards.relay.start()
    boards.switch.start(via=netfault, keepalive=5, extra=switch_settings(boards))
    online(telemetry, boards.relay)
    online(telemetry, boards.switch)
    mark = telemetry.mark()
    with netfault.refuse(), netfault.cut():
        telemetry.expect_last_will(boards.switch.topic("status"), b"offline", since=mark, timeout=15)
        press(boards)
        boards.switch.console.expect(r"button: press 1")
        # The relay node goes on: it answers, and nothing the switch meant has reached it.
        reply = telemetry.request(boards.relay.topic("cmd"), {"id": "during", "op": "get"},
                                  boards.relay.topic("reply"), where={"id": "during"}, timeout=10)
        assert reply.json()["relays"] == [False, False]
        telemetry.expect_none(boards.relay.topic("status"), where=lambda m: m.payload == b"offline",
                              since=mark, within=0.5)
    online(telemetry, boards.switch, since=mark, timeout=30)
    relay_state(telemetry, boards, [True, False], since=mark, timeout=10)  # the kept press, delivered
    assert telemetry.expect(boards.switch.topic("press"), since=mark).json() == \
        {"seq": 1, "dropped": 0, "ts": pytest.approx(0, abs=10**10)}


def test_both_nodes_reboot_and_the_switch_still_drives_the_relay(boards, telemetry):
    start_pair(boards, telemetry)
    mark = telemetry.mark()
    reply = telemetry.request(boards.relay.topic("cmd"), {"id": "on", "op": "set", "relay": 0, "state": True},
                              boards.relay.topic("reply"), where={"id": "on"}, timeout=10)
    assert reply.json()["relays"] == [True, False]
    if boards.switch.simulated:
        led_is(boards, 1)
    mark = telemetry.mark()
    for role in (boards.relay, boards.switch):
        role.restart()
    online(telemetry, boards.relay, since=mark)
    online(telemetry, boards.switch, since=mark)
    relay_state(telemetry, boards, [True, False], since=mark, timeout=10)  # restored from NVS
    if boards.switch.simulated:
        led_is(boards, 1)  # the relay's retained state, read again after the reboot
        mark = telemetry.mark()
        press(boards)
        relay_state(telemetry, boards, [False, False], since=mark)
        led_is(boards, 0)


@pytest.mark.boards(switch=SWITCH, relay=RELAY, station=STATION)
@pytest.mark.requires_sim("switch")
def test_three_boards_a_switch_a_relay_and_a_weather_station(boards, telemetry):
    devices = boards.start_all({"switch": {"extra": switch_settings(boards)},
                                "station": {"extra": {"interval_s": 1}}})
    assert set(devices) == {"switch", "relay", "station"}
    assert len({role.client_id for role in boards}) == 3
    for role in boards:
        online(telemetry, role)
    station = boards.station
    readings = station.topic("telemetry")
    first = telemetry.collect(2, readings, timeout=15)[0]  # the first waits for the connection; later ones keep time
    if station.simulated:
        station.sim.sensor("bme280", address=0x76).set(temperature=26.5)
    mark = telemetry.mark()
    press(boards)
    relay_state(telemetry, boards, [True, False], since=mark)
    led_is(boards, 1)
    later = telemetry.collect(3, readings, since=mark, timeout=15)
    telemetry.validate(later, station.firmware.schema("telemetry"))
    if station.simulated:
        assert later[-1].json()["temperature_c"] == pytest.approx(26.5, abs=0.1)
    telemetry.assert_sequence(readings, min_count=5)  # the station lost nothing meanwhile
    telemetry.assert_rate(readings, every=1, tolerance=0.1, clock="board", since=first)
