"""The gateway driven by an MQTT-SN client from the package index (mqtt-sn-12, in the `dev` extra),
so it is proven against more than the harness's own clients: connect with a will, publish at
QoS -1 to 2, subscribe by name, filter and predefined id, receive (after a REGISTER for a
filter's topic), disconnect."""

import select

import pytest

from micropython_hil.mqttsn import Gateway

mqttsn12 = pytest.importorskip("mqttsn12.client.MqttSnClient", reason="pip install mqtt-sn-12 (the dev extra)")


class Inbox:
    """mqtt-sn-12's listener: what arrived, by topic name (or topic id)."""

    def __init__(self):
        self.messages = []

    def message_arrived(self, msg):
        self.messages.append((msg.get_topic_name() or msg.get_topic_id(), bytes(msg.get_payload())))


def poll_until(client, inbox, n, timeout=5.0):
    """mqtt-sn-12 reads one datagram per polling() call: call it as each one arrives."""
    while len(inbox.messages) < n:
        ready, _, _ = select.select([client.datagram_socket], [], [], timeout)
        if not ready:
            raise AssertionError(f"mqtt-sn-12 received {inbox.messages}, expected {n} messages")
        client.polling()


@pytest.fixture
def third_party(broker):
    with Gateway(broker, predefined={7: "tp/pre"}) as gw:
        client = mqttsn12.MqttSnClient()
        client.set_client_id("thirdparty-1")
        client.set_timeout(3)
        client.set_keep_alive(30)
        client.set_will("tp/status", "gone", 1, False)
        client.open(gw.host, gw.port)
        try:
            yield gw, client
        finally:
            client.close()


def test_a_client_from_the_package_index_connects_publishes_and_subscribes(third_party, telemetry):
    gw, client = third_party
    client.send_connect()
    gw.wait_state("thirdparty-1", "active")
    assert gw.sessions()["thirdparty-1"]["will"] == "tp/status"

    client.send_publish("tp/data", b"at qos 0", 0)
    client.send_publish("tp/data", b"at qos 1", 1)
    client.send_publish("tp/data", b"at qos 2", 2)
    client.send_publish_predefined(7, b"at qos -1", -1)
    client.send_publish("xy", b"short name", 1)
    got = telemetry.collect(3, "tp/data")
    assert [(m.payload, m.qos) for m in got] == [(b"at qos 0", 0), (b"at qos 1", 1), (b"at qos 2", 2)]
    assert telemetry.expect("tp/pre").payload == b"at qos -1"
    assert telemetry.expect("xy").payload == b"short name"
    assert gw.traffic.expect("PUBLISH", direction="up", qos=-1).topic == "tp/pre"

    # QoS 0 subscriptions: mqtt-sn-12 1.0.9 never acknowledges a QoS 1 PUBLISH it receives (its
    # polling() compares the decoded QoS, 1, with the flag value 0x20), so at QoS 1 the gateway
    # would retry its first message and hold the rest behind it, as it should.
    inbox = Inbox()
    client.send_subscribe("tp/cmd", 0, inbox)
    client.send_subscribe("tp/alerts/#", 0, inbox)
    client.send_subscribe_predefined(7, 0, inbox)
    telemetry.publish("tp/cmd", "by name", qos=1)
    telemetry.publish("tp/alerts/fire", "by filter", qos=1)
    telemetry.publish("tp/pre", "by id", qos=1)
    poll_until(client, inbox, 3)
    assert {m[:2] for m in inbox.messages} == {("tp/cmd", b"by name"), ("tp/alerts/fire", b"by filter"),
                                               (7, b"by id")}
    register = gw.traffic.expect("REGISTER", direction="down", topic="tp/alerts/fire")
    gw.traffic.expect("REGACK", direction="up", client_id="thirdparty-1", return_code=0, since=register)
    assert {m.qos for m in gw.traffic.select("PUBLISH", direction="down", client_id="thirdparty-1")} == {0}

    client.send_disconnect()
    gw.wait_state("thirdparty-1", "disconnected")
    telemetry.expect_none("tp/status", within=0.2)  # a clean DISCONNECT: no will


def test_its_sleep_is_the_gateways_asleep(third_party, telemetry):
    gw, client = third_party
    client.send_connect()
    client.send_disconnect(60)  # DISCONNECT with a duration: asleep, not gone
    gw.wait_state("thirdparty-1", "asleep")
    assert gw.traffic.expect("DISCONNECT", direction="up", client_id="thirdparty-1").duration == 60
