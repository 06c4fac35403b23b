"""Telemetry recorder and its checks, against real brokers and a real MicroPython (umqtt) device."""

from __future__ import annotations

import base64
import json

import pytest

from micropython_hil.mqtt.broker import AmqttBroker, MosquittoBroker
from micropython_hil.plugin.mqtt import micropython_mqtt  # noqa: F401 - fixture
from micropython_hil.mqtt.telemetry import Message, Telemetry, TelemetryError, topic_matches

SCHEMA = {
    "type": "object",
    "required": ["seq", "t_ms", "temp"],
    "properties": {"seq": {"type": "integer"}, "t_ms": {"type": "integer"}, "temp": {"type": "number"}},
}

# A small device: status retained, five readings 100 ms apart, then answers commands until told to stop.
DEVICE = """
import json, time
c = connect("dev-1", will=("dev/status", "offline", True, 1))
c.publish(b"dev/status", b"online", True, 1)
for seq in range(5):
    c.publish(b"dev/telemetry", json.dumps({"seq": seq, "t_ms": 1000 + seq * 100, "temp": 20.5 + seq}), False, 1)
    time.sleep(0.1)
c.publish(b"dev/raw", b"\\xff\\xfe not utf-8")
running = True
def on_cmd(topic, msg):
    global running
    cmd = json.loads(msg)
    if cmd["op"] == "stop":
        running = False
    else:
        c.publish(b"dev/reply", json.dumps({"id": cmd["id"], "echo": cmd["op"]}), False, 1)
c.set_callback(on_cmd)
c.subscribe(b"dev/cmd", 1)
c.publish(b"dev/ready", b"1")
while running:
    c.wait_msg()
c.publish(b"dev/status", b"bye", True, 1)
c.disconnect()
"""


@pytest.fixture(scope="module", params=["amqtt", "mosquitto"])
def any_broker(request):
    if request.param == "mosquitto" and (reason := MosquittoBroker.available()):
        pytest.skip(reason)
    broker = (AmqttBroker() if request.param == "amqtt" else MosquittoBroker()).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def amqtt():
    with AmqttBroker() as broker:
        yield broker


@pytest.fixture
def telemetry(any_broker):
    with Telemetry(any_broker) as recorder:
        yield recorder


def test_device_traffic_through_every_helper(any_broker, telemetry, micropython_mqtt, tmp_path):
    proc = micropython_mqtt(DEVICE, broker=any_broker)
    telemetry.expect("dev/ready", timeout=10)

    status = telemetry.expect("dev/status", where=lambda m: m.text == "online")
    assert (status.qos, status.retain) == (1, True)
    if any_broker.kind == "amqtt":
        assert status.client_id == "dev-1"
    first_two = telemetry.collect(2, "dev/+", timeout=1)
    assert [m.topic for m in first_two] == ["dev/status", "dev/telemetry"]
    readings = telemetry.collect(5, "dev/telemetry")
    assert [m.json()["seq"] for m in readings] == [0, 1, 2, 3, 4]
    assert telemetry.expect("dev/telemetry", where={"seq": 3}).json()["temp"] == 23.5
    telemetry.validate("dev/telemetry", SCHEMA, min_count=5)
    assert telemetry.assert_rate("dev/telemetry", every=0.1, tolerance=0.01, clock="board", time_field="t_ms") \
        == pytest.approx([0.1] * 4)
    telemetry.assert_rate("dev/telemetry", every=0.1, tolerance=0.9)  # host arrival: generous for a busy CI
    assert telemetry.assert_sequence("dev/telemetry", field="seq", min_count=5) == [0, 1, 2, 3, 4]
    telemetry.assert_retained("dev/status", "online")
    telemetry.assert_not_retained("dev/telemetry")

    raw = telemetry.expect("dev/raw")
    assert raw.payload == b"\xff\xfe not utf-8"

    reply = telemetry.request("dev/cmd", {"op": "ping", "id": 7}, "dev/reply", where={"id": 7})
    assert reply.json() == {"id": 7, "echo": "ping"}
    telemetry.publish("dev/cmd", {"op": "stop"})
    telemetry.expect("dev/status", where=lambda m: m.text == "bye", timeout=5)
    assert proc.wait(5) == 0
    telemetry.assert_retained("dev/status", "bye")

    saved = [json.loads(line) for line in telemetry.save_jsonl(tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["topic"] for r in saved] == [m.topic for m in telemetry.messages]
    raw_saved = next(r for r in saved if r["topic"] == "dev/raw")
    assert base64.b64decode(raw_saved["payload_b64"]) == b"\xff\xfe not utf-8"
    assert next(r for r in saved if r["topic"] == "dev/ready")["payload"] == "1"


def test_checks_fail_with_recent_traffic(amqtt, micropython_mqtt):
    script = """
import json
c = connect("dev-bad")
for seq in (0, 1, 2, 4, 4, 5):
    c.publish(b"bad/telemetry", json.dumps({"seq": seq, "t_ms": seq * 100, "temp": "hot"}), False, 1)
c.publish(b"bad/notjson", b"{oops")
c.disconnect()
"""
    with Telemetry(amqtt) as telemetry:
        assert micropython_mqtt(script, broker=amqtt).wait(10) == 0
        telemetry.expect("bad/notjson")

        with pytest.raises(TelemetryError, match=r"missing 3; duplicated \[4\]") as failure:
            telemetry.assert_sequence("bad/telemetry")
        assert "recent traffic" in str(failure.value) and "bad/notjson" in str(failure.value)
        assert telemetry.sequence("bad/telemetry")["gaps"] == [(2, 4)]

        with pytest.raises(TelemetryError, match=r"fails its schema at temp: 'hot' is not of type 'number'"):
            telemetry.validate("bad/telemetry", SCHEMA)
        with pytest.raises(TelemetryError, match="is not JSON"):
            telemetry.expect("bad/notjson").json()
        with pytest.raises(TelemetryError, match=r"expected 1 message\(s\) on 'nothing/here'.*\n.*recent traffic"):
            telemetry.expect("nothing/here", timeout=0.2)
        with pytest.raises(TelemetryError, match=r"should arrive every 1.0s \+-20% \(board clock\); 5 of 5 intervals off"):
            telemetry.assert_rate("bad/telemetry", every=1.0, clock="board", time_field="t_ms")
        with pytest.raises(TelemetryError, match="no board time"):
            telemetry.assert_rate("bad/telemetry", every=0.1, clock="board")
        with pytest.raises(TelemetryError, match="expected no message"):
            telemetry.expect_none("bad/notjson", within=0.1)
        with pytest.raises(TelemetryError, match="expected a retained message"):
            telemetry.assert_retained("bad/telemetry")
        telemetry.expect_none("bad/other", within=0.05)


def test_last_will_of_a_silent_device_is_recorded_and_retained(any_broker, telemetry, micropython_mqtt):
    # keepalive 1 s, then silence: the broker must drop it after 1.5 s and publish its will.
    script = """
import time
c = connect("dev-will", keepalive=1, will=("will/status", "offline", True, 1))
c.publish(b"will/status", b"online", True, 1)
time.sleep(30)
"""
    micropython_mqtt(script, broker=any_broker)
    since = telemetry.expect("will/status", where=lambda m: m.text == "online", timeout=10)
    will = telemetry.expect_last_will("will/status", "offline", timeout=6, retained=True, since=since)
    assert will.arrival - since.arrival >= 1.0  # not before the keepalive ran out


def test_record_ordering_and_filters_unit():
    # Unit test of the recorder alone: a stand-in broker only collects the listener.
    class Stub:
        kind, host, port = "stub", "-", 0
        listener = None

        def add_listener(self, fn):
            self.listener = fn

        def remove_listener(self, fn):
            self.listener = None

    stub = Stub()
    telemetry = Telemetry(stub)
    for i in range(3):
        stub.listener(f"a/{i}", b'{"n": %d}' % i, 0, False, False, "x")
    mark = telemetry.mark()
    stub.listener("a/9", b"\x00" * 10, 2, True, True, None)
    assert [m.index for m in telemetry.select("a/+")] == [0, 1, 2, 3]
    assert telemetry.select("a/#", since=mark)[0].payload == b"\x00" * 10
    assert telemetry.select("a/+", since=telemetry.messages[1])[0].topic == "a/2"
    assert telemetry.select("a/+", where={"n": 1})[0].topic == "a/1"
    assert "a/9 q2 RD" in str(telemetry.messages[-1])
    telemetry.close()
    assert stub.listener is None


@pytest.mark.parametrize("topic_filter, topic, expected", [
    ("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False), ("a/#", "a", True),
    ("a/#", "a/b/c", True), ("#", "$SYS/x", False), ("+/b", "a/c", False), ("$SYS/#", "$SYS/x", True),
])
def test_topic_matches(topic_filter, topic, expected):
    assert topic_matches(topic_filter, topic) is expected


def test_message_json_and_dict():
    message = Message(0, 1.0, "t", b'{"a": 1}', 1, False, False, "c")
    assert message.json() == {"a": 1}
    assert message.to_dict()["payload"] == '{"a": 1}'


class EndedRun:
    """What Telemetry.watch reads of a FirmwareRun: a board's name, whether it runs, its error."""

    def __init__(self, board_name: str, error: BaseException | None = None):
        self.board = type("B", (), {"name": board_name})()
        self.running, self.error = error is None, error

    def on_end(self, listener):
        if not self.running:
            listener()


def test_a_crashed_firmware_fails_only_the_waits_that_concern_it(amqtt):
    from micropython_hil.errors import BoardException

    crash = BoardException.from_traceback("unix#1", "Traceback (most recent call last):\nKeyError: id\n")
    with Telemetry(amqtt) as t:
        t.watch(EndedRun("unix#1", crash), "hil/ws-1", ["stations/ws-1/reading"])
        for concerned in ("#", "hil/ws-1/telemetry", "hil/+/status", "stations/+/reading", "stations/#"):
            with pytest.raises(BoardException, match="KeyError: id"):
                t.collect(1, concerned, timeout=5)
        for other in ("hil/ws-2/telemetry", "hil/ws-1", "stations/ws-2/reading"):
            with pytest.raises(TelemetryError, match="within 0.2 s"):
                t.collect(1, other, timeout=0.2)
        # Silence and the last will are what a test of a crash waits for: those wait on.
        t.expect_none("hil/ws-1/telemetry", within=0.2)
        t.publish("hil/ws-1/status", "offline")
        assert t.expect_last_will("hil/ws-1/status", "offline", timeout=5).payload == b"offline"
        # The firmware started again on the same board: its waits are its own again.
        t.watch(EndedRun("unix#1"), "hil/ws-1")
        t.publish("hil/ws-1/telemetry", "back")
        assert t.expect("hil/ws-1/telemetry", timeout=5).payload == b"back"
