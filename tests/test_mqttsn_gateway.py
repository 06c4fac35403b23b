"""The MQTT-SN gateway against the test's broker, driven over real UDP by the harness's own
literal client (SnClient): every message type, QoS -1 to 2 both ways, topic ids of every kind,
sleeping clients, keep-alive versus sleep duration, wills, discovery, restarts, and what the
gateway records."""

import json
import socket
import threading
import time

import pytest

from micropython_hil.errors import HarnessError, TelemetryError
from micropython_hil.mqtt import MosquittoBroker, Telemetry
from micropython_hil.mqttsn import Gateway, SnClient
from micropython_hil.mqttsn import packets as sn
from micropython_hil.mqttsn.packets import Packet


@pytest.fixture
def gw(broker):
    """A gateway with quick timers: a second of keep-alive is 0.1 s of the host's, retries 50 ms."""
    with Gateway(broker, predefined={7: "pre/seven"}, supervision_scale=0.1, retry_s=0.05, retries=2) as gateway:
        yield gateway


@pytest.fixture
def client(gw):
    with SnClient(gw.address, "sn-1") as c:
        yield c


def test_connect_register_and_publish_at_every_qos(gw, client, telemetry):
    assert client.connect(keepalive=30) == sn.ACCEPTED
    gw.wait_state("sn-1", "active")
    topic_id = client.register("sn/data")
    assert client.publish("sn/data", "q0", qos=0) is None
    assert client.publish("sn/data", "q1", qos=1).return_code == sn.ACCEPTED
    assert client.publish("sn/data", "q2", qos=2).type == sn.PUBCOMP
    client.publish("sn/data", "kept", qos=1, retain=True)
    got = telemetry.collect(4, "sn/data")
    assert [(m.payload, m.qos, m.client_id in ("sn-1", None)) for m in got] == \
        [(b"q0", 0, True), (b"q1", 1, True), (b"q2", 2, True), (b"kept", 1, True)]
    telemetry.assert_retained("sn/data", "kept")
    up = gw.traffic.select("PUBLISH", direction="up", client_id="sn-1")
    assert [(m.qos, m.topic_id, m.topic, m.topic_type) for m in up] == \
        [(q, topic_id, "sn/data", "normal") for q in (0, 1, 2, 1)]
    telemetry.publish("sn/data", b"", retain=True)


def test_qos_minus_one_needs_no_connection(gw, telemetry):
    with SnClient(gw.address, "never-connects") as c:
        c.publish(7, "by predefined id", qos=-1, topic_type=sn.PREDEFINED)
        c.publish("zz", "by short name", qos=-1)
        c.publish(99, "unknown predefined id", qos=-1, topic_type=sn.PREDEFINED)
    assert telemetry.expect("pre/seven").payload == b"by predefined id"
    assert telemetry.expect("zz").payload == b"by short name"
    minus_one = gw.traffic.collect(3, "PUBLISH", direction="up", qos=-1)
    assert [(m.topic_type, m.topic) for m in minus_one] == [("predefined", "pre/seven"), ("short", "zz"),
                                                           ("predefined", None)]
    gw.traffic.expect_none("PUBACK", within=0.2)  # QoS -1 is never answered
    assert any("unusable topic id 99" in text for _, text in gw.events)


def test_subscribe_by_name_filter_predefined_id_and_short_name(gw, client, telemetry):
    client.connect()
    exact = client.subscribe("sn/exact", qos=1)
    assert exact.return_code == sn.ACCEPTED and exact.topic_id  # a name: its id comes with the SUBACK
    assert client.subscribe("sn/cmd/#", qos=2).topic_id == 0      # a filter: ids come by REGISTER
    assert client.subscribe("ab", qos=1).topic_id == 0             # a short name
    predefined = client.subscribe(7, qos=0, topic_type=sn.PREDEFINED)
    assert predefined.topic_id == 7 and predefined.qos == 0
    assert client.subscribe(99, topic_type=sn.PREDEFINED).return_code == sn.INVALID_TOPIC_ID
    mark = gw.traffic.mark()
    telemetry.publish("sn/exact", "e", qos=1)
    telemetry.publish("sn/cmd/go", "g", qos=2)
    telemetry.publish("ab", "s", qos=1)
    telemetry.publish("pre/seven", "p", qos=1)
    received = client.messages(4)
    by_topic = {client.topic_of(p) or p.topic_id: p for p in received}
    assert by_topic["sn/exact"].topic_id == exact.topic_id and by_topic["sn/exact"].qos == 1
    assert by_topic["sn/cmd/go"].qos == 2 and by_topic["ab"].topic_type == sn.SHORT
    assert by_topic[7].topic_type == sn.PREDEFINED and by_topic[7].qos == 0  # granted QoS 0
    # REGISTER went down before the first PUBLISH on the filter's new topic, and nowhere else.
    registers = gw.traffic.select("REGISTER", direction="down", since=mark)
    assert [m.topic for m in registers] == ["sn/cmd/go"]
    down = gw.traffic.expect("PUBLISH", direction="down", topic="sn/cmd/go", since=mark)
    assert registers[0].index < down.index and down.topic_id == registers[0].topic_id
    for step in ("PUBREC", "PUBCOMP"):
        gw.traffic.expect(step, direction="up", since=down)
    gw.traffic.expect("PUBREL", direction="down", since=down)


def test_unsubscribe_stops_delivery(gw, client, telemetry):
    client.connect()
    client.subscribe("sn/u", qos=1)
    telemetry.publish("sn/u", "1")
    client.messages(1)
    client.unsubscribe("sn/u")
    telemetry.publish("sn/u", "2")
    time.sleep(0.1)
    assert client.recv(0.1) is None and len(client.received) == 1


def test_a_sleeping_client_gets_what_was_buffered_between_pingreq_and_pingresp(gw, client, telemetry):
    client.connect(keepalive=1)
    client.subscribe("sn/cmd", qos=1)
    client.subscribe("sn/note", qos=0)
    client.sleep(30)
    gw.wait_state("sn-1", "asleep")
    asleep = gw.traffic.mark()
    telemetry.publish("sn/cmd", "first", qos=1)
    telemetry.publish("sn/note", "second", qos=0)
    time.sleep(0.3)  # longer than the keep-alive: asleep, the sleep duration supervises instead
    gw.traffic.expect_none(direction="down", since=asleep, within=0.05)  # held while it sleeps
    assert gw.sessions()["sn-1"]["buffered"] == 2
    woke = client.ping(wake=True)
    assert [p.data for p in woke] == [b"first", b"second"]
    ping = gw.traffic.expect("PINGREQ", direction="up", client_id="sn-1", since=asleep)
    pong = gw.traffic.expect("PINGRESP", direction="down", since=ping)
    sent = gw.traffic.select("PUBLISH", direction="down", since=ping)
    assert [m.payload for m in sent] == [b"first", b"second"]
    assert all(ping.index < m.index < pong.index for m in sent)
    gw.traffic.expect("PUBACK", direction="up", since=ping)
    assert gw.state("sn-1") == "asleep"  # back to sleep after the PINGRESP
    assert client.connect(clean=False) == sn.ACCEPTED  # and awake for good: the session is kept
    assert gw.state("sn-1") == "active" and gw.sessions()["sn-1"]["subscriptions"] == ["sn/cmd", "sn/note"]


def test_the_buffer_of_a_sleeping_client_is_bounded(broker, telemetry):
    with Gateway(broker, max_buffered=2) as gw, SnClient(gw.address, "sn-b") as c:
        c.connect()
        c.subscribe("sn/b", qos=1)
        c.sleep(60)
        gw.wait_state("sn-b", "asleep")
        for i in range(3):
            telemetry.publish("sn/b", str(i), qos=1)
        telemetry.collect(3, "sn/b")
        time.sleep(0.1)
        assert [p.data for p in c.ping(wake=True)] == [b"1", b"2"]
        assert gw.sessions()["sn-b"]["dropped"] == 1


def test_keepalive_runs_out_and_the_will_fires(gw, telemetry):
    with SnClient(gw.address, "sn-w") as c:
        c.connect(keepalive=2, will=("sn/w/status", b"gone", 1, True))
    gw.wait_state("sn-w", "lost", timeout=3)  # 2 s x 1.5, scaled by 0.1
    telemetry.expect_last_will("sn/w/status", "gone", retained=True, timeout=5)
    telemetry.publish("sn/w/status", b"", retain=True)


def test_asleep_the_sleep_duration_supervises_not_the_keepalive(gw, telemetry):
    with SnClient(gw.address, "sn-s") as c:
        c.connect(keepalive=1, will=("sn/s/status", b"lost", 0, False))
        c.sleep(5)
        mark = telemetry.mark()
        time.sleep(0.4)  # past 1 s x 1.5 x 0.1 of keep-alive, within 5 s x 1.5 x 0.1 of sleep
        assert gw.state("sn-s") == "asleep"
        telemetry.expect_none("sn/s/status", since=mark, within=0.05)
        c.ping(wake=True)  # a wake restarts the sleep timer
        time.sleep(0.4)
        assert gw.state("sn-s") == "asleep"
        gw.wait_state("sn-s", "lost", timeout=3)  # then nothing: lost after 0.75 s
        telemetry.expect_last_will("sn/s/status", "lost", timeout=5)
        c.send(Packet(sn.PINGREQ, client_id="sn-s"))
        c.expect(sn.DISCONNECT)  # a lost client's wake is refused: it must connect again


def test_a_clean_disconnect_fires_no_will(gw, client, telemetry):
    client.connect(will=("sn/d/status", b"gone", 1, False))
    client.disconnect()
    gw.wait_state("sn-1", "disconnected")
    telemetry.expect_none("sn/d/status", within=0.3)


def test_the_will_can_be_updated(gw, telemetry):
    with SnClient(gw.address, "sn-u") as c:
        c.connect(keepalive=2, will=("sn/u/old", b"old", 0, False))
        c.send(Packet(sn.WILLTOPICUPD, topic="sn/u/new", qos=1))
        assert c.expect(sn.WILLTOPICRESP).return_code == sn.ACCEPTED
        c.send(Packet(sn.WILLMSGUPD, data=b"new will"))
        assert c.expect(sn.WILLMSGRESP).return_code == sn.ACCEPTED
    telemetry.expect_last_will("sn/u/new", "new will", timeout=5)
    telemetry.expect_none("sn/u/old", within=0.1)


def test_what_the_gateway_refuses(gw, client):
    # Before any CONNECT: what needs a session is answered with DISCONNECT.
    client.send(Packet(sn.PUBLISH, qos=1, topic_id=1, msg_id=1, data=b"x"))
    client.expect(sn.DISCONNECT)
    client.send(Packet(sn.PINGREQ, client_id="nobody"))
    client.expect(sn.DISCONNECT)
    client.send(Packet(sn.CONNECT, protocol_id=2, client_id="sn-1"))
    assert client.expect(sn.CONNACK).return_code == sn.NOT_SUPPORTED
    client.send(Packet(sn.CONNECT, client_id="x" * 24))
    assert client.expect(sn.CONNACK).return_code == sn.NOT_SUPPORTED
    client.connect()
    client.send(Packet(sn.PUBLISH, qos=1, topic_id=42, msg_id=2, data=b"x"))
    assert client.expect(sn.PUBACK).return_code == sn.INVALID_TOPIC_ID
    client.send(Packet(sn.REGISTER, msg_id=3, topic="sn/+/x"))
    assert client.expect(sn.REGACK).return_code == sn.NOT_SUPPORTED
    mark = gw.traffic.mark()
    client.send(b"\x09\x0c\x00")  # a length that lies: recorded, never answered
    client.send(b"\x02\x42")      # an unknown type
    bad = gw.traffic.collect(2, "MALFORMED", direction="up", since=mark)
    assert "length field says 9" in bad[0].error and "unknown message type 0x42" in bad[1].error
    assert client.recv(0.1) is None


def test_a_dup_retransmission_is_forwarded_once(gw, client, telemetry):
    client.connect()
    client.register("sn/once")
    client.publish("sn/once", "v", qos=1, msg_id=77)
    again = client.publish("sn/once", "v", qos=1, msg_id=77, dup=True)  # its PUBACK was "lost"
    assert again.return_code == sn.ACCEPTED
    client.publish("sn/once", "w", qos=1, msg_id=77)  # no DUP: a new message that reuses the id
    telemetry.collect(2, "sn/once")
    telemetry.expect_none("sn/once", since=2, within=0.2)
    assert [m.payload for m in telemetry.select("sn/once")] == [b"v", b"w"]


def test_downward_retries_park_then_resume_when_the_client_speaks(gw, telemetry):
    with SnClient(gw.address, "sn-r", auto_ack=False) as c:
        c.connect()
        c.subscribe("sn/r", qos=1)
        telemetry.publish("sn/r", "m", qos=1)
        first = c.expect(sn.PUBLISH)
        retries = [c.expect(sn.PUBLISH) for _ in range(2)]  # retries=2, 50 ms apart, with DUP
        assert not first.dup and all(p.dup and p.msg_id == first.msg_id for p in retries)
        assert c.recv(0.2) is None  # parked
        c.send(Packet(sn.PINGREQ))
        again = c.expect(sn.PUBLISH)  # the client spoke: tried again at once
        assert again.msg_id == first.msg_id
        c.send(Packet(sn.PUBACK, topic_id=again.topic_id, msg_id=again.msg_id))
        c.expect(sn.PINGRESP)
        assert c.recv(0.15) is None


def test_a_client_that_rejects_a_topic_id_is_sent_a_register(gw, telemetry):
    with SnClient(gw.address, "sn-x", auto_ack=False) as c:
        c.connect()
        topic_id = c.subscribe("sn/x", qos=1).topic_id
        telemetry.publish("sn/x", "m", qos=1)
        p = c.expect(sn.PUBLISH)
        assert p.topic_id == topic_id
        c.send(Packet(sn.PUBACK, topic_id=p.topic_id, msg_id=p.msg_id, return_code=sn.INVALID_TOPIC_ID))
        register = c.expect(sn.REGISTER)
        assert register.topic == "sn/x"
        c.send(Packet(sn.REGACK, topic_id=register.topic_id, msg_id=register.msg_id))
        again = c.expect(sn.PUBLISH)
        assert again.data == b"m" and again.topic_id == register.topic_id


def test_discovery_searchgw_gwinfo_and_advertise(gw):
    host, port = gw.broadcast_address
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a node waiting for ADVERTISE
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.settimeout(2)
    try:
        with SnClient(("127.0.0.1", 1), "sn-d") as c:
            gw_id, source = c.search((host, port))
            assert gw_id == gw.gw_id and source == gw.address
        gw.advertise()
        heard = []  # the node's SEARCHGW was a broadcast too (and the gateway's first ADVERTISE may come)
        while not (any(p.type == sn.SEARCHGW for p, _ in heard) and heard[-1][0].type == sn.ADVERTISE):
            data, source = listener.recvfrom(64)
            heard.append((sn.decode(data), source))
        advertise, source = heard[-1]
        assert (advertise.type, advertise.gw_id, advertise.duration, source) == \
            (sn.ADVERTISE, gw.gw_id, 900, gw.address)
    finally:
        listener.close()
    assert gw.traffic.select("ADVERTISE", direction="down")  # at start and on demand


def test_a_restart_forgets_every_session(gw, client):
    client.connect()
    client.register("sn/r")
    client.sleep(60)
    gw.restart()
    assert gw.restarts == 1 and gw.state("sn-1") is None
    client.send(Packet(sn.PINGREQ, client_id="sn-1"))
    client.expect(sn.DISCONNECT)  # the node learns it must set its session up again
    client.connect()
    client.send(Packet(sn.PUBLISH, qos=1, topic_id=client.topics["sn/r"], msg_id=9))
    assert client.expect(sn.PUBACK).return_code == sn.INVALID_TOPIC_ID
    assert any("gateway down" in text for _, text in gw.events)


def test_forget_topics_and_inject(gw, client):
    client.connect()
    topic_id = client.register("sn/f")
    gw.forget_topics("sn-1")
    client.send(Packet(sn.PUBLISH, qos=1, topic_id=topic_id, msg_id=5))
    assert client.expect(sn.PUBACK).return_code == sn.INVALID_TOPIC_ID
    gw.inject("sn-1", b"\x03\x99\x00", when="now")
    assert client.sock.recvfrom(16)[0] == b"\x03\x99\x00"
    assert gw.traffic.expect("MALFORMED", direction="down").error == "unknown message type 0x99"
    client.sleep(60)
    gw.inject("sn-1", sn.encode(Packet(sn.PUBLISH, qos=0, topic_id=999)))  # at the next wake
    client.send(Packet(sn.PINGREQ, client_id="sn-1"))
    assert client.expect(sn.PUBLISH).topic_id == 999
    client.expect(sn.PINGRESP)
    with pytest.raises(HarnessError, match="no client 'ghost'"):
        gw.inject("ghost", b"")
    with pytest.raises(ValueError, match="when="):
        gw.inject("sn-1", b"", when="later")


def test_wait_state_fails_with_the_recent_traffic(gw, client):
    client.connect()
    with pytest.raises(TelemetryError, match=r"'sn-1' is active, not asleep, after 0.1 s(.|\n)*CONNACK"):
        gw.wait_state("sn-1", "asleep", timeout=0.1)
    with pytest.raises(ValueError, match="state 'sleeping'"):
        gw.wait_state("sn-1", "sleeping")


def test_bad_settings_and_a_stopped_gateway(broker):
    with pytest.raises(HarnessError, match="'::1' is not an IPv4 address"):
        Gateway(broker, host="::1")
    with pytest.raises(ValueError, match="gw_id 300"):
        Gateway(broker, gw_id=300)
    with pytest.raises(ValueError, match="must be a topic name without wildcards"):
        Gateway(broker, predefined={3: "a/#"})
    stopped = Gateway(broker)
    with pytest.raises(HarnessError, match="is not running"):
        stopped.advertise()
    with Gateway(broker) as taken, pytest.raises(HarnessError, match="cannot listen on UDP"):
        Gateway(broker, port=taken.port).start()


def test_the_record_saves_as_json_lines(gw, client, tmp_path):
    client.connect()
    client.publish("zz", b"\xff\x00", qos=0)
    client.send(b"\x01")
    gw.traffic.expect("MALFORMED")
    path = gw.traffic.save_jsonl(tmp_path / "mqttsn.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    publish = next(r for r in records if r["type"] == "PUBLISH")
    assert publish["topic"] == "zz" and publish["topic_type"] == "short" and publish["payload_b64"] == "/wA="
    assert records[-1]["type"] == "MALFORMED" and "too short" in records[-1]["error"]


def test_it_bridges_to_mosquitto_too(tmp_path):
    if MosquittoBroker.available() is not None:
        pytest.skip(MosquittoBroker.available())
    with MosquittoBroker() as broker, Telemetry(broker) as recorded, Gateway(broker) as gw, \
            SnClient(gw.address, "sn-m") as c:
        c.connect()
        c.subscribe("sn/m/cmd", qos=1)
        assert c.publish("sn/m/data", "up", qos=1).return_code == sn.ACCEPTED
        recorded.publish("sn/m/cmd", "down", qos=1)
        assert c.messages(1)[0].data == b"down"
        assert recorded.expect("sn/m/data").payload == b"up"


def test_a_fault_of_the_gateway_is_reported_and_it_goes_on(gw, client, monkeypatch):
    def broken(self, p, addr, s):
        raise KeyError("planted")

    monkeypatch.setitem(Gateway._HANDLERS, sn.SEARCHGW, broken)
    client.send(Packet(sn.SEARCHGW, radius=1))
    assert client.ping() == []  # still answering
    assert gw.errors == [f"handling SEARCHGW from {client.address[0]}:{client.address[1]}: KeyError: 'planted'"]


def test_stopping_leaves_no_thread_or_socket(broker):
    gw = Gateway(broker, predefined={7: "sn/end/pre"}).start()
    with SnClient(gw.address, "sn-end") as c:
        c.connect()
        c.subscribe("sn/end", qos=1)
        c.publish(7, "x", qos=-1, topic_type=sn.PREDEFINED)  # the gateway's own connection too
        gw.traffic.expect("PUBLISH", qos=-1)
        c.ping()
    port = gw.port
    gw.stop()
    gw.stop()
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n.startswith(("hil-mqttsn", "hil-mqtt-sn-end", "hil-mqtt-hil-mqttsn"))], names
    for host in ("127.0.0.1", "127.255.255.255"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, port))  # free again


def test_a_connect_sent_again_before_anything_else_is_a_retransmission(gw, client):
    assert client.connect(keepalive=30, will=("sn/rt/status", b"gone", 1, False)) == sn.ACCEPTED
    mark = gw.traffic.mark()
    again = Packet(sn.CONNECT, clean=True, will=True, duration=30, client_id="sn-1")
    client.send(again)  # its CONNACK was "late": the client's timer ran out first
    assert client.expect(sn.CONNACK).return_code == sn.ACCEPTED
    gw.traffic.expect_none("WILLTOPICREQ", since=mark, within=0.05)  # not a new session
    client.register("sn/rt")
    client.send(again)  # after other traffic, the same CONNECT starts a new session
    client.expect(sn.WILLTOPICREQ)
