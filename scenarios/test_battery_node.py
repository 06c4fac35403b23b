"""Battery node scenarios: a sleepy sensor node on MQTT-SN (UDP) behind the harness's gateway.

The node reads an SHT3x and its battery, publishes at QoS 1, and deep-sleeps between readings;
commands sent while it sleeps wait at the gateway and arrive at its next wake, between its
PINGREQ and the gateway's PINGRESP. The gateway bridges to whichever broker the run uses, so the
`telemetry` fixture records the readings like any MQTT traffic; `gateway.traffic` records the
MQTT-SN side (topic ids, QoS -1, the sleep and wake exchanges). Scenarios that set the sensor or
count simulated resets need the simulator; on a bench board run the gateway with
--mqttsn-listen 0.0.0.0.
"""

import pytest

pytestmark = pytest.mark.firmware("firmware_under_test/battery_node")

HOUR = 3600


def interval_for(board, simulated_s=600, real_s=5):
    """The reading interval a scenario uses: ten minutes where the board's clock is virtual, a
    few seconds on hardware (where ten minutes take ten minutes)."""
    return simulated_s if board.sim is not None else real_s


@pytest.fixture(autouse=True)
def battery_node_wiring(request):
    """The node's bench: an SHT3x at 0x44 and the battery behind a 1:2 divider on GPIO35."""
    board = request.getfixturevalue("board")
    if board.sim is not None:
        board.sim.sensor("sht3x", address=0x44).set(temperature=21.5, humidity=40.0)
        board.sim.adc(35).set(1.9)


def wakes(traffic, client_id, since=0):
    """The node's wake exchanges: (its PINGREQ, the gateway's PINGRESP), in order."""
    pings = traffic.select("PINGREQ", direction="up", client_id=client_id, since=since,
                           where=lambda m: m.packet.client_id is not None)
    return [(ping, traffic.expect("PINGRESP", direction="down", client_id=client_id, since=ping))
            for ping in pings]


@pytest.mark.sim(time="fast")
def test_discovery_and_connect(board, gateway, start_firmware, telemetry, firmware):
    gateway.predefine(5, "hil/hello")
    host, port = gateway.broadcast_address
    device = start_firmware(via=gateway, extra={"discover": True, "broadcast": [host, port],
                                                "hello_topic_id": 5})
    cid = device.client_id
    traffic = gateway.traffic
    search = traffic.expect("SEARCHGW", direction="up", timeout=15)
    assert search.address.split(":")[0] == "127.0.0.1"
    traffic.expect("GWINFO", direction="down", since=search)
    device.console.expect(rf"node: gateway {gateway.gw_id} at 127\.0\.0\.1:{gateway.port}", timeout=10)
    # QoS -1 needs no connection: the predefined id reaches the broker as its topic name.
    hello = traffic.expect("PUBLISH", direction="up", qos=-1, topic_type="predefined", topic_id=5)
    assert telemetry.expect("hil/hello").payload == b"power-on"
    connect = traffic.expect("CONNECT", client_id=cid, since=hello)
    assert connect.packet.will and connect.packet.clean
    for step in ("WILLTOPICREQ", "WILLTOPIC", "WILLMSGREQ", "WILLMSG", "CONNACK"):
        traffic.expect(step, client_id=cid, since=connect)
    assert traffic.expect("CONNACK", client_id=cid, since=connect).return_code == 0
    regack = traffic.expect("REGACK", client_id=cid, topic=device.topic("telemetry"), since=connect)
    assert regack.return_code == 0
    assert traffic.expect("SUBSCRIBE", client_id=cid).packet.topic == device.topic("cmd") + "/#"
    assert telemetry.expect(device.topic("status"), timeout=10).payload == b"online"
    telemetry.assert_retained(device.topic("status"), "online")
    reading = telemetry.expect(device.topic("telemetry"), schema=firmware.schema("telemetry"), timeout=10)
    assert reading.client_id in (cid, None)  # the gateway connects to the broker under the node's id
    if board.sim is not None:  # the bench wiring the simulator was given
        values = reading.json()
        assert values["temperature_c"] == pytest.approx(21.5, abs=0.01)
        assert values["humidity_pct"] == pytest.approx(40.0, abs=0.1)
        assert values["battery_v"] == pytest.approx(3.8, abs=0.01)
    published = traffic.expect("PUBLISH", direction="up", client_id=cid, topic=device.topic("telemetry"))
    assert published.qos == 1 and published.topic_type == "normal"
    assert published.topic_id == regack.topic_id


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_readings_over_a_board_day_with_deep_sleep(sim, board, gateway, start_firmware, telemetry, firmware):
    device = start_firmware(via=gateway, extra={"interval_s": HOUR})
    topic = device.topic("telemetry")
    readings = telemetry.collect(25, topic, timeout=60)  # a board day: at 0 h, 1 h, ... 24 h
    telemetry.validate(readings, firmware.schema("telemetry"))
    assert telemetry.assert_sequence(topic)[:25] == list(range(1, 26))
    telemetry.assert_rate(topic, every=HOUR, tolerance=0.01, clock="board", time_field="ts", time_unit=1)
    assert sum(1 for r in sim.resets if r.get("cause") == "deepsleep") >= 24
    board.console.expect(r"rst:0x5 \(DEEPSLEEP_RESET\)", timeout=5)
    # Each wake: PINGREQ with the client id, PINGRESP, CONNECT without clean session, the
    # reading, and back to sleep for an hour.
    cid = device.client_id
    exchanges = wakes(gateway.traffic, cid)
    assert len(exchanges) >= 24
    sleeps = gateway.traffic.select("DISCONNECT", direction="up", client_id=cid)
    assert sleeps and all(m.duration == HOUR for m in sleeps)
    woken = gateway.traffic.select("CONNECT", client_id=cid, since=exchanges[0][0])
    assert woken and not any(m.packet.clean for m in woken)  # the session lives on across the sleeps
    registered = gateway.traffic.select("REGISTER", direction="up", client_id=cid)
    assert {m.topic for m in registered} == {topic, device.topic("reply"), device.topic("status")}
    assert all(m.index < exchanges[0][0].index for m in registered)  # at power-on only


@pytest.mark.sim(time="real")
def test_a_command_sent_while_the_node_sleeps_arrives_at_its_next_wake(board, gateway, start_firmware, telemetry,
                                                                        firmware):
    # Real time: a one-second deep sleep lasts a second, so the command surely finds it asleep.
    device = start_firmware(via=gateway, extra={"interval_s": 1})
    cid = device.client_id
    telemetry.expect(device.topic("telemetry"), timeout=15)
    gateway.wait_state(cid, "asleep", timeout=10)
    since = gateway.traffic.mark()
    telemetry.publish(device.topic("cmd"), {"id": 7}, qos=1)
    gateway.wait_buffered(cid, 1)  # held at the gateway while the node sleeps
    reply = telemetry.expect(device.topic("reply"), schema=firmware.schema("reply"), timeout=15).json()
    assert reply["ok"] is True and reply["id"] == 7
    # Held at the gateway: the topic was registered to the node (its subscription is a filter),
    # then the command went down after the wake's PINGREQ and before its PINGRESP.
    command = gateway.traffic.expect("PUBLISH", direction="down", client_id=cid, topic=device.topic("cmd"),
                                     since=since)
    ping, pong = [(p, r) for p, r in wakes(gateway.traffic, cid, since) if p.index < command.index][-1]
    assert ping.index < command.index < pong.index
    assert gateway.traffic.expect("PUBACK", direction="up", client_id=cid, since=command).return_code == 0
    # The reply carries the reading of the wake the command arrived at.
    wake_readings = telemetry.select(device.topic("telemetry"), where={"seq": reply["seq"]})
    assert wake_readings, f"no reading with seq {reply['seq']} in {telemetry.recent()}"


@pytest.mark.sim(time="fast")
def test_an_interval_command_takes_effect_from_the_next_sleep(board, gateway, start_firmware, telemetry):
    every = interval_for(board)
    device = start_firmware(via=gateway, extra={"interval_s": every})
    topic = device.topic("telemetry")
    telemetry.collect(2, topic, timeout=15 + 2 * every)
    longer = max(every * 3, 10)
    telemetry.publish(device.topic("cmd"), {"interval_s": longer, "id": 1}, qos=1)
    reply = telemetry.expect(device.topic("reply"), timeout=15 + every).json()
    assert reply == {"ok": True, "id": 1, "interval_s": longer, "seq": reply["seq"]}
    after = telemetry.collect(3, topic, where=lambda m: m.json()["seq"] >= reply["seq"], timeout=15 + 2 * longer)
    stamps = [m.json()["ts"] for m in after]
    assert [b - a for a, b in zip(stamps, stamps[1:])] == [pytest.approx(longer, abs=2)] * 2
    sleeps = gateway.traffic.select("DISCONNECT", direction="up", client_id=device.client_id)
    assert sleeps[-1].duration == longer


@pytest.mark.sim(time="fast")
def test_the_gateway_restarts_and_the_node_registers_its_topics_again(board, gateway, start_firmware, telemetry):
    every = interval_for(board)
    device = start_firmware(via=gateway, extra={"interval_s": every})
    cid, topic = device.client_id, device.topic("telemetry")
    telemetry.collect(3, topic, timeout=15 + 3 * every)
    gateway.wait_state(cid, "asleep")
    since = gateway.traffic.mark()
    gateway.restart()  # every session, topic id and buffered message is gone
    # The node learns it at its next wake: its PINGREQ is answered with DISCONNECT (or, had
    # that PINGREQ fallen in the restart, its first PUBLISH with "invalid topic id").
    traffic = gateway.traffic
    connect = traffic.expect("CONNECT", client_id=cid, since=since, where=lambda m: m.packet.clean,
                             timeout=15 + every)
    assert connect.packet.will
    register = traffic.expect("REGISTER", direction="up", client_id=cid, topic=topic, since=since)
    traffic.expect("SUBSCRIBE", direction="up", client_id=cid, since=connect)
    device.console.expect(r"node: the gateway lost our (session|topic ids)", timeout=10)
    first_after = telemetry.collect(1, topic, since=telemetry.mark(), timeout=15 + every)[0].json()["seq"]
    telemetry.collect(first_after + 2, topic, timeout=15 + 3 * every)
    values = telemetry.assert_sequence(topic, min_count=first_after + 2)  # nothing lost, nothing twice
    assert values == sorted(values)
    republished = traffic.expect("PUBLISH", direction="up", client_id=cid, topic=topic, since=register)
    assert republished.topic_id == traffic.expect("REGACK", client_id=cid, since=register).topic_id
    # A command after the restart reaches it: its subscription was made again too.
    telemetry.publish(device.topic("cmd"), {"id": 3}, qos=1)
    assert telemetry.expect(device.topic("reply"), where={"id": 3}, timeout=15 + every).json()["ok"] is True


@pytest.mark.sim(time="fast")
def test_qos1_across_twenty_percent_udp_loss_loses_nothing(board, gateway, udpfault, start_firmware, telemetry):
    udpfault.loss(0.2)  # both ways, from power-on: the will handshake, wakes and publishes too
    every = interval_for(board)
    device = start_firmware(via=udpfault, extra={"interval_s": every})
    topic = device.topic("telemetry")
    telemetry.collect(20, topic, timeout=60 + 20 * every)
    values = telemetry.assert_sequence(topic, min_count=20)  # no gap, no duplicate
    assert values[:20] == list(range(1, 21))
    stats = udpfault.stats()
    assert stats.lost >= 10, stats  # the loss was real
    retries = gateway.traffic.select("PUBLISH", direction="up", client_id=device.client_id, dup=True)
    assert retries, "no PUBLISH was retransmitted: the loss never hit a publish"
