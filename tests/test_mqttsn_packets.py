"""The MQTT-SN 1.2 wire format (mqttsn/packets.py) and topic ids (mqttsn/topics.py): every message
type round-trips, the bytes are the specification's, malformed datagrams are refused by name."""

import pytest

from micropython_hil.mqttsn import packets as sn
from micropython_hil.mqttsn.packets import Packet, decode, encode
from micropython_hil.mqttsn.topics import TopicIds, has_wildcards

EVERY_TYPE = [
    Packet(sn.ADVERTISE, gw_id=3, duration=900),
    Packet(sn.SEARCHGW, radius=1),
    Packet(sn.GWINFO, gw_id=3),
    Packet(sn.GWINFO, gw_id=3, gw_add=b"\x7f\x00\x00\x01\x07\x5d"),
    Packet(sn.CONNECT, will=True, clean=True, duration=30, client_id="node-1"),
    Packet(sn.CONNACK, return_code=sn.CONGESTION),
    Packet(sn.WILLTOPICREQ),
    Packet(sn.WILLTOPIC, qos=1, retain=True, topic="n/status"),
    Packet(sn.WILLTOPIC),  # empty: no will
    Packet(sn.WILLMSGREQ),
    Packet(sn.WILLMSG, data=b"offline"),
    Packet(sn.REGISTER, topic_id=0, msg_id=9, topic="n/telemetry"),
    Packet(sn.REGACK, topic_id=4, msg_id=9, return_code=sn.ACCEPTED),
    Packet(sn.PUBLISH, qos=1, dup=True, retain=True, topic_type=sn.NORMAL, topic_id=4, msg_id=10, data=b"{}"),
    Packet(sn.PUBLISH, qos=-1, topic_type=sn.PREDEFINED, topic_id=7, data=b"x"),
    Packet(sn.PUBLISH, qos=0, topic_type=sn.SHORT, topic_id=sn.short_id("ab"), data=b""),
    Packet(sn.PUBACK, topic_id=4, msg_id=10, return_code=sn.INVALID_TOPIC_ID),
    Packet(sn.PUBREC, msg_id=11), Packet(sn.PUBREL, msg_id=11), Packet(sn.PUBCOMP, msg_id=11),
    Packet(sn.SUBSCRIBE, qos=2, topic_type=sn.NORMAL, msg_id=12, topic="n/cmd/#"),
    Packet(sn.SUBSCRIBE, qos=1, topic_type=sn.PREDEFINED, msg_id=13, topic_id=7),
    Packet(sn.SUBACK, qos=1, topic_id=5, msg_id=12, return_code=sn.ACCEPTED),
    Packet(sn.UNSUBSCRIBE, topic_type=sn.SHORT, msg_id=14, topic_id=sn.short_id("ab")),
    Packet(sn.UNSUBACK, msg_id=14),
    Packet(sn.PINGREQ), Packet(sn.PINGREQ, client_id="node-1"), Packet(sn.PINGRESP),
    Packet(sn.DISCONNECT), Packet(sn.DISCONNECT, duration=600),
    Packet(sn.WILLTOPICUPD, qos=1, topic="n/gone"), Packet(sn.WILLTOPICRESP),
    Packet(sn.WILLMSGUPD, data=b"bye"), Packet(sn.WILLMSGRESP, return_code=sn.NOT_SUPPORTED),
    Packet(sn.ENCAPSULATED, ctrl=1, node_id=b"\x01\x02", data=encode(Packet(sn.PINGRESP))),
]


@pytest.mark.parametrize("packet", EVERY_TYPE, ids=lambda p: str(p))
def test_every_message_type_round_trips(packet):
    assert decode(encode(packet)) == packet


def test_the_bytes_are_the_specifications():
    # CONNECT: length, type, flags (will, clean), protocol id 1, duration, client id
    assert encode(Packet(sn.CONNECT, will=True, clean=True, duration=60, client_id="ab")) == \
        bytes([8, 0x04, 0x0C, 0x01, 0, 60]) + b"ab"
    # PUBLISH QoS -1 to predefined id 7: flags 0b0110_0001
    assert encode(Packet(sn.PUBLISH, qos=-1, topic_type=sn.PREDEFINED, topic_id=7, data=b"v")) == \
        bytes([8, 0x0C, 0x61, 0, 7, 0, 0]) + b"v"
    # PUBLISH QoS 2, DUP, RETAIN, short topic "ab"
    assert encode(Packet(sn.PUBLISH, qos=2, dup=True, retain=True, topic_type=sn.SHORT,
                         topic_id=sn.short_id("ab"), msg_id=0x0102)) == bytes([7, 0x0C, 0xD2, 0x61, 0x62, 1, 2])
    assert encode(Packet(sn.DISCONNECT, duration=600)) == bytes([4, 0x18, 0x02, 0x58])
    assert encode(Packet(sn.PINGREQ, client_id="n")) == bytes([3, 0x16]) + b"n"


def test_long_messages_take_the_three_byte_length():
    packet = Packet(sn.PUBLISH, qos=1, topic_id=1, msg_id=1, data=b"x" * 300)
    raw = encode(packet)
    assert raw[0] == 0x01 and (raw[1] << 8 | raw[2]) == len(raw) == 309 and raw[3] == sn.PUBLISH
    assert decode(raw) == packet
    assert len(encode(Packet(sn.PUBLISH, data=b"x" * 248))) == 255  # the last one-byte length
    assert encode(Packet(sn.PUBLISH, data=b"x" * 249))[0] == 0x01


@pytest.mark.parametrize("raw, why", [
    (b"", "too short"),
    (b"\x05", "too short"),
    (b"\x05\x0c\x00", "length field says 5"),
    (b"\x02\x03", "unknown message type 0x03"),
    (b"\x02\xff", "unknown message type 0xff"),
    (b"\x00\x0c", "length field is 0"),
    (b"\x01\x00\x05\x0c\x00", "below 256"),
    (b"\x06\x0c\x20\x00\x01\x00", "needs at least 5 bytes"),
    (b"\x04\x10\x00", "length field says 4"),
    (b"\x03\x10\x00", "must have 2 bytes"),
    (b"\x07\x0a\x00\x00\x00\x01\xff", "not valid UTF-8"),
    (b"\x04\x05\x00\x00", "must have 1 bytes"),
    (b"\x05\x12\x21\x00\x01", "by topic id must have 5 bytes"),
])
def test_malformed_datagrams_are_refused_by_name(raw, why):
    with pytest.raises(ValueError, match=why):
        decode(raw)


def test_flags_and_names():
    packet = decode(encode(Packet(sn.SUBSCRIBE, qos=-1, dup=True, topic_type=sn.SHORT, topic_id=sn.short_id("zz"))))
    assert (packet.qos, packet.dup, packet.topic_type, sn.short_name(packet.topic_id)) == (-1, True, sn.SHORT, "zz")
    with pytest.raises(ValueError, match="QoS 3"):
        encode(Packet(sn.PUBLISH, qos=3))
    with pytest.raises(ValueError, match="exactly two bytes"):
        sn.short_id("abc")
    assert str(Packet(sn.PUBLISH, qos=1, topic_id=4, msg_id=2, data=b"abc")) == "PUBLISH q1 id=4(normal) mid=2 3B"
    assert "rejected: invalid topic id" in str(Packet(sn.PUBACK, return_code=sn.INVALID_TOPIC_ID))
    assert sn.TYPES["PINGREQ"] == sn.PINGREQ


def test_topic_ids_per_client_over_the_predefined_table():
    predefined = {7: "pre/seven"}
    ids = TopicIds(predefined)
    a, b = ids.register("a/b"), ids.register("c/d")
    assert (a, b, ids.register("a/b")) == (1, 2, 1)
    assert ids.name(sn.NORMAL, 2) == "c/d" and ids.name(sn.NORMAL, 9) is None
    assert ids.name(sn.PREDEFINED, 7) == "pre/seven" and ids.predefined_id("pre/seven") == 7
    predefined[8] = "later"  # the gateway's table, shared
    assert ids.name(sn.PREDEFINED, 8) == "later"
    assert ids.name(sn.SHORT, sn.short_id("xy")) == "xy"
    ids.forget("a/b")
    assert ids.normal_id("a/b") is None and ids.register("e/f") == 3
    ids.clear()
    assert ids.registered == {} and ids.register("x") == 1
    assert has_wildcards("a/+/b") and has_wildcards("a/#") and not has_wildcards("a/b")


def test_the_subpackage_names_its_exports():
    import micropython_hil.mqttsn as mqttsn
    import micropython_hil.netfault as netfault

    assert mqttsn.__all__ and all(hasattr(mqttsn, name) for name in mqttsn.__all__)
    assert {"Gateway", "SnClient", "SnTraffic", "Packet"} <= set(mqttsn.__all__)
    assert {"UdpFaultProxy", "UdpFault", "UdpStats"} <= set(netfault.__all__)
