"""Network and broker faults between the device and the cloud: the device must come back by
itself, resubscribe, and lose or duplicate nothing beyond what MQTT allows.

What the link promises, at its boundaries: reconnects that back off from 1 s, doubling, to one a
minute, and start from 1 s again after a success; a retained "online" at QoS 1 each time it is
back and a retained "offline" last will when it is gone; a persistent session (commands sent
while it was away are delivered when it is back) and its subscriptions renewed when the broker
lost the session."""

import re
import time

import pytest

from micropython_hil.mqtt.outage import Outage

WEATHER = "firmware_under_test/weather_station"
HOME = "firmware_under_test/home_automation"


def retries(console_text):
    """The reconnect delays the link announced ("retry in N ms"), in order."""
    return [int(ms) for ms in re.findall(r"retry in (\d+) ms", console_text)]


def command(telemetry, device, request_id, timeout=10):
    return telemetry.request(device.topic("cmd"), {"id": request_id, "op": "ping"}, device.topic("reply"),
                             where=lambda m: m.json().get("id") == request_id, timeout=timeout)


@pytest.mark.firmware(WEATHER)
@pytest.mark.sim(time="fast")
def test_five_minute_broker_outage_in_board_time(board, netfault, start_firmware, telemetry, firmware, wait_board):
    """The weather station buffers through a five-minute outage and sends every reading after it.
    Its reconnects back off: 1 s, doubling, capped at a minute; after a success, from 1 s again."""
    device = start_firmware(via=netfault, extra={"interval_s": 60})
    telemetry.collect(2, device.topic("telemetry"), timeout=30)
    with Outage(telemetry, device) as outage:
        with netfault.refuse():
            netfault.cut()
            device.console.expect("link: down", timeout=15)
            # The board's clock runs fast: its reconnect backoff eats board minutes in wall
            # milliseconds. Five board minutes of refused connections, however long that takes here.
            wait_board(300)
        # The outage ends when the refusals stop: read the board's clock now, not before (on a
        # busy host the board runs on for board minutes while this process waits for a CPU).
        wait_board(0)
    # Reconnects back off to one attempt a minute; one may be refused just as the outage ends,
    # so the device is back within two of those periods.
    outage.assert_back_online(within=130)
    telemetry.collect(8, device.topic("telemetry"), timeout=30)  # 2 before, 5+ buffered, 1+ after
    outage.assert_no_loss("telemetry", min_after=3)
    assert telemetry.select(device.topic("telemetry"))[-1].json()["dropped"] == 0
    telemetry.validate(device.topic("telemetry"), firmware.schema("telemetry"))
    first = retries(device.console.text)
    assert first[:7] == [1000, 2000, 4000, 8000, 16000, 32000, 60000] and set(first[7:]) <= {60000}, first
    # A second, short outage: the backoff starts from one second again.
    with netfault.refuse():
        netfault.cut()
        device.console.expect(r"link: connect failed.*\n", timeout=15)
        wait_board(5)
    device.console.expect(r"link: online \(connect #3\)", timeout=30)
    assert retries(device.console.text)[len(first)] == 1000, retries(device.console.text)


@pytest.mark.firmware(WEATHER)
@pytest.mark.sim(time="real")
def test_blackhole_fires_the_last_will_then_the_device_recovers(netfault, start_firmware, telemetry):
    """A half-open link (nothing passes, nothing closes): keepalive must catch it, the broker
    publishes the last will, and the device comes back when the path is clear."""
    device = start_firmware(via=netfault, keepalive=2, extra={"interval_s": 1})
    telemetry.collect(1, device.topic("telemetry"), timeout=20)
    with Outage(telemetry, device) as outage:
        with netfault.blackhole():
            outage.assert_last_will(timeout=10)
    outage.assert_back_online(within=30)
    outage.assert_no_loss("telemetry", min_after=2)


@pytest.mark.firmware(HOME)
def test_cut_then_the_node_resubscribes(netfault, start_firmware, telemetry):
    device = start_firmware(via=netfault)
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    with Outage(telemetry, device) as outage:
        netfault.cut()
        device.console.expect("link: down", timeout=15)
    outage.assert_back_online(within=30)
    reply = outage.assert_resubscribed({"id": "after-cut", "op": "ping"}, "reply",
                                       where=lambda m: m.json().get("id") == "after-cut")
    assert reply.json()["ok"] is True
    will = outage.assert_last_will()
    assert will.retain and will.qos == 1, "the last will is retained at QoS 1"
    back = telemetry.select(device.topic("status"), where=lambda m: m.payload == b"online")[-1]
    assert back.retain and back.qos == 1
    telemetry.assert_retained(device.topic("status"), "online")


@pytest.mark.firmware(HOME)
@pytest.mark.sim(time="fast")
def test_a_command_sent_while_the_node_was_away_is_taken_when_it_is_back(netfault, start_firmware, telemetry):
    """The node keeps a persistent session (clean_session false) with a QoS 1 subscription: the
    broker holds a command published while the node is away and delivers it on reconnect."""
    device = start_firmware(via=netfault)
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    with netfault.refuse():
        netfault.cut()
        device.console.expect("link: down", timeout=15)
        mark = telemetry.mark()
        telemetry.publish(device.topic("cmd"), {"id": "while-away", "op": "set", "relay": 1, "state": True}, qos=1)
        time.sleep(0.2)
    reply = telemetry.expect(device.topic("reply"), where=lambda m: m.json().get("id") == "while-away",
                             since=mark, timeout=15)
    assert reply.json() == {"id": "while-away", "ok": True, "relays": [False, True]}


@pytest.mark.firmware(HOME)
@pytest.mark.sim(time="fast")
def test_the_node_subscribes_again_when_the_broker_lost_its_session(broker, start_firmware, telemetry):
    if not hasattr(broker, "restart") or broker.kind == "external":
        pytest.skip("needs a broker the harness runs (amqtt or mosquitto)")
    device = start_firmware()
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    assert command(telemetry, device, "before").json()["ok"] is True
    broker.restart(keep_sessions=False, downtime=0.5)  # sessions and subscriptions gone
    device.console.expect(r"link: online \(connect #2\)", timeout=30)
    assert command(telemetry, device, "after-restart").json()["ok"] is True


@pytest.mark.firmware(HOME)
@pytest.mark.requires_sim
@pytest.mark.sim(time="real")
def test_a_publish_never_acknowledged_drops_the_link_after_one_socket_timeout(sim, netfault, start_firmware,
                                                                             telemetry, wait_board):
    """The link never blocks longer than one socket timeout (5 s), so the main loop lives on and
    feeds the watchdog through any outage. A button press's state goes out at QoS 1 into a
    half-open link: no PUBACK comes, and the read waiting for it must give up after 5 s (umqtt's
    check_msg leaves the socket blocking without a timeout: the link must set it again), well
    before an 8 s watchdog would reset the node."""
    device = start_firmware(via=netfault, extra={"wdt_ms": 8000})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    telemetry.expect(device.topic("state"), where={"relays": [False, False]}, timeout=10)
    # Only what the node sends is held: PUBACKs of what it sent before still reach it.
    with netfault.blackhole(direction="up"):
        pressed_s = wait_board(0)
        sim.pin(25).pulse(0)  # the button: relay 0 on, its state published at QoS 1
        device.console.expect(r"link: down", timeout=12)
        down_s = wait_board(0)
        assert "button: relay 0 on" in device.console.text
        assert 4.5 <= down_s - pressed_s <= 7, f"link down {down_s - pressed_s:.1f} s after the publish"
    device.console.expect(r"link: online \(connect #2\)", timeout=15)
    telemetry.expect(device.topic("state"), where={"relays": [True, False]}, timeout=10)
    assert not sim.resets and "rst:" not in device.console.text, "the watchdog fired"
