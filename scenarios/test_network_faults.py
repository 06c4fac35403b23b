"""Network and broker faults between the device and the cloud: the device must come back by
itself, resubscribe, and lose or duplicate nothing beyond what MQTT allows."""

import time

import pytest

from micropython_hil.mqtt.outage import Outage

WEATHER = "firmware_under_test/weather_station"
HOME = "firmware_under_test/home_automation"


def wait_board_seconds(board, seconds, timeout):
    """Until the board's clock moved `seconds` on (simulated board), or that long (hardware)."""
    if board.sim is None:
        time.sleep(seconds)
        return
    board.sim.sync()  # the board reports its clock with each answer
    start = board.sim.board_time_us
    deadline = time.monotonic() + timeout
    while board.sim.board_time_us - start < seconds * 1e6:
        # No sleep here: fast time moves the board minutes per wall second; each sync is a
        # round trip (well under a millisecond) that reports the board's clock.
        assert time.monotonic() < deadline, f"board clock stuck at {board.sim.board_time_us} us"
        board.sim.sync()


@pytest.mark.firmware(WEATHER)
@pytest.mark.sim(time="fast")
def test_five_minute_broker_outage_in_board_time(board, netfault, start_firmware, telemetry, firmware):
    """The weather station buffers through a five-minute outage and sends every reading after it."""
    device = start_firmware(via=netfault, extra={"interval_s": 60})
    telemetry.collect(2, device.topic("telemetry"), timeout=30)
    with Outage(telemetry, device) as outage:
        with netfault.refuse():
            netfault.cut()
            device.console.expect("link: down", timeout=15)
            # The board's clock runs fast: its reconnect backoff eats board minutes in wall
            # milliseconds. Five board minutes of refused connections, however long that takes here.
            wait_board_seconds(board, 300, timeout=60)
    # Reconnects back off to one attempt a minute; one may be refused just as the outage ends,
    # so the device is back within two of those periods.
    outage.assert_back_online(within=130)
    telemetry.collect(8, device.topic("telemetry"), timeout=30)  # 2 before, 5+ buffered, 1+ after
    values = outage.assert_no_loss("telemetry", min_after=3)
    assert telemetry.select(device.topic("telemetry"))[-1].json()["dropped"] == 0
    telemetry.validate(device.topic("telemetry"), firmware.schema("telemetry"))


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
