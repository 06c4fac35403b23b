"""The embedded amqtt broker's fixes, one test each (each fails without the patch it names),
and its capture: every message byte-exact, with the publisher's client id, in order, wills
included. Fast: the harness's own client and raw sockets, no MicroPython."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from micropython_hil.mqtt import AmqttBroker, Telemetry


@pytest.fixture
def broker():
    with AmqttBroker() as embedded:
        yield embedded


@pytest.fixture
def telemetry(broker):
    with Telemetry(broker) as recorder:
        yield recorder


def _utf8(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def raw_connect(broker, client_id: str, keepalive: int, will: tuple[str, bytes, int, bool]) -> socket.socket:
    """An MQTT 3.1.1 client that connects and then says nothing at all (no PINGREQ either)."""
    topic, message, qos, retain = will
    flags = 0x02 | 0x04 | (qos << 3) | (0x20 if retain else 0)
    body = (_utf8(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
            + _utf8(client_id.encode()) + _utf8(topic.encode()) + _utf8(message))
    sock = socket.create_connection((broker.host, broker.port), timeout=5)
    sock.sendall(bytes([0x10, len(body)]) + body)
    assert sock.recv(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
    return sock


class Inbox:
    """What one subscriber received: (topic, payload, qos), waited on as it arrives."""

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes, int]] = []
        self.cond = threading.Condition()

    def __call__(self, topic, payload, qos, retain, dup, client_id) -> None:
        with self.cond:
            self.got.append((topic, payload, qos))
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 5.0) -> list[tuple[str, bytes, int]]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.got) >= n, timeout)
            return list(self.got)


# Guards the keepalive patch (_PatchedAmqtt._initialize_client_session: keep_alive x1.5 and
# handle_read_timeout cutting the connection): amqtt alone never drops a silent client.
def test_a_silent_client_is_dropped_after_one_and_a_half_keepalives(broker, telemetry):
    sock = raw_connect(broker, "dev-silent", keepalive=1, will=("silent/status", b"offline", 1, False))
    try:
        connected = time.monotonic()
        will = telemetry.expect("silent/status", timeout=5)
        took = time.monotonic() - connected
    finally:
        sock.close()
    assert (will.payload, will.qos, will.client_id) == (b"offline", 1, "dev-silent")
    assert 1.4 <= took < 4.0, f"dropped {took:.2f} s after connecting; keepalive 1 s allows 1.5 s"


# Guards HarnessAuthPlugin (in place of amqtt's AnonymousAuthPlugin, whose anonymous sessions
# amqtt forgets within a second of their disconnecting, queued messages and all).
def test_a_persistent_session_keeps_what_was_queued_while_it_was_away(broker, telemetry):
    with broker.client("sub-away", clean=False) as away:
        away.subscribe("away/t", qos=1)
    time.sleep(1.5)  # amqtt's session monitor runs every second: an anonymous session is gone by now
    telemetry.publish("away/t", b"queued while away", qos=1)
    inbox = Inbox()
    with broker.client("sub-away", clean=False, on_message=inbox):
        assert inbox.wait(1) == [("away/t", b"queued while away", 1)]


# Guards the routing-loop patch (_PatchedAmqtt._run_broadcast, with _broadcast_message and the
# noted delivery carrying the publish QoS): amqtt delivers at the subscription's QoS instead.
def test_the_delivered_qos_is_the_lower_of_publish_and_subscription(broker):
    inboxes = {0: Inbox(), 1: Inbox()}
    subscribers = [broker.client(on_message=inboxes[qos]) for qos in (0, 1)]
    try:
        for qos, subscriber in zip((0, 1), subscribers):
            subscriber.subscribe("qos/#", qos=qos)
        with broker.client("pub-qos") as publisher:
            for qos in (0, 1, 2):
                publisher.publish("qos/t", f"published-{qos}", qos=qos)
        got = {qos: inbox.wait(3) for qos, inbox in inboxes.items()}
    finally:
        for subscriber in subscribers:
            subscriber.close()
    assert got[0] == [("qos/t", b"published-0", 0), ("qos/t", b"published-1", 0), ("qos/t", b"published-2", 0)]
    assert got[1] == [("qos/t", b"published-0", 0), ("qos/t", b"published-1", 1), ("qos/t", b"published-2", 1)]


# Guards the DISCONNECT drain (the wait_disconnect wrapper in _initialize_client_session): amqtt
# ends the client loop on DISCONNECT and drops the publishes still queued behind it. Keepalive 0
# (as umqtt's default): amqtt's reader then parses a burst without yielding, so it queues up.
def test_a_burst_published_just_before_disconnect_is_routed_whole(broker, telemetry):
    inbox = Inbox()
    with broker.client(on_message=inbox) as subscriber:
        subscriber.subscribe("burst/t", qos=0)
        with broker.client("dev-burst", keepalive=0) as publisher:
            for i in range(300):
                publisher.publish("burst/t", f"{i}", qos=0)
        # leaving the block sent DISCONNECT right behind the burst
        recorded = telemetry.collect(300, "burst/t", timeout=10)
        assert [m.payload for m in recorded] == [f"{i}".encode() for i in range(300)]
        assert [payload for _topic, payload, _qos in inbox.wait(300)] == [f"{i}".encode() for i in range(300)]


def test_capture_records_every_message_byte_exact_with_its_publisher_in_order(broker, telemetry):
    megabyte = bytes(range(256)) * 4096
    with broker.client("cap-1") as first, broker.client("cap-2") as second:
        first.publish("cap/a", b"\xc3\x28\xff not utf-8", qos=0)
        second.publish("cap/b", megabyte, qos=1)
        first.publish("cap/c", b"", qos=2)
        second.publish("cap/d", b"kept", qos=1, retain=True)
        first.publish("cap/e", "après", qos=1)
    # a client that vanishes: the broker publishes its will on its behalf
    gone = broker.client("cap-gone", will=("cap/status", b"\x00offline", 1, True))
    gone.close(disconnect=False)
    telemetry.expect("cap/status", timeout=5)
    recorded = [(m.topic, m.payload, m.qos, m.retain, m.dup, m.client_id) for m in telemetry.select("cap/#")]
    assert recorded == [
        ("cap/a", b"\xc3\x28\xff not utf-8", 0, False, False, "cap-1"),
        ("cap/b", megabyte, 1, False, False, "cap-2"),
        ("cap/c", b"", 2, False, False, "cap-1"),
        ("cap/d", b"kept", 1, True, False, "cap-2"),
        ("cap/e", "après".encode(), 1, False, False, "cap-1"),
        ("cap/status", b"\x00offline", 1, True, False, "cap-gone"),
    ]
    assert [m.index for m in telemetry.messages] == list(range(len(telemetry.messages)))
    assert telemetry.retained("cap/#") == {"cap/d": b"kept", "cap/status": b"\x00offline"}


def test_a_new_client_gets_no_retained_message_of_another_clients_filter(broker):
    # Guards _PatchedAmqtt._publish_retained_messages_for_subscription: amqtt 0.12 replays, at
    # every CONNECT, the retained messages of every filter any client holds.
    holder = broker.client("holder").connect()
    holder.subscribe("relay/state", qos=1)
    holder.publish("relay/state", b"on", qos=1, retain=True)
    stranger = raw_connect(broker, "stranger", keepalive=30, will=("stranger/will", b"x", 0, False))
    stranger.settimeout(0.5)
    with pytest.raises(socket.timeout):  # it subscribed to nothing: nothing may come
        stranger.recv(64)
    stranger.close()
    holder.close()
