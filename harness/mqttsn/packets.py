"""The MQTT-SN 1.2 wire format: every message type's fields, encoded and decoded.

Written from the MQTT-SN 1.2 specification (section 5). A message is one UDP datagram: a length
(one octet, or 0x01 then two octets when the message is 256 octets or longer; it counts the
whole message), a type octet, then the type's fields. Flags (PUBLISH, SUBSCRIBE, CONNECT, ...):
DUP bit 7, QoS bits 6-5 (0b11 is QoS -1), RETAIN bit 4, WILL bit 3, CLEAN bit 2, topic id type
bits 1-0 (normal, predefined, short). `decode` is strict: a datagram whose length field
disagrees with its size, an unknown type or a truncated field raises ValueError naming what is
wrong, so a gateway records it and answers nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ADVERTISE, SEARCHGW, GWINFO = 0x00, 0x01, 0x02
CONNECT, CONNACK = 0x04, 0x05
WILLTOPICREQ, WILLTOPIC, WILLMSGREQ, WILLMSG = 0x06, 0x07, 0x08, 0x09
REGISTER, REGACK = 0x0A, 0x0B
PUBLISH, PUBACK, PUBCOMP, PUBREC, PUBREL = 0x0C, 0x0D, 0x0E, 0x0F, 0x10
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 0x12, 0x13, 0x14, 0x15
PINGREQ, PINGRESP, DISCONNECT = 0x16, 0x17, 0x18
WILLTOPICUPD, WILLTOPICRESP, WILLMSGUPD, WILLMSGRESP = 0x1A, 0x1B, 0x1C, 0x1D
ENCAPSULATED = 0xFE

TYPE_NAMES = {
    ADVERTISE: "ADVERTISE", SEARCHGW: "SEARCHGW", GWINFO: "GWINFO", CONNECT: "CONNECT", CONNACK: "CONNACK",
    WILLTOPICREQ: "WILLTOPICREQ", WILLTOPIC: "WILLTOPIC", WILLMSGREQ: "WILLMSGREQ", WILLMSG: "WILLMSG",
    REGISTER: "REGISTER", REGACK: "REGACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK", PUBCOMP: "PUBCOMP",
    PUBREC: "PUBREC", PUBREL: "PUBREL", SUBSCRIBE: "SUBSCRIBE", SUBACK: "SUBACK", UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ", PINGRESP: "PINGRESP", DISCONNECT: "DISCONNECT",
    WILLTOPICUPD: "WILLTOPICUPD", WILLTOPICRESP: "WILLTOPICRESP", WILLMSGUPD: "WILLMSGUPD",
    WILLMSGRESP: "WILLMSGRESP", ENCAPSULATED: "ENCAPSULATED",
}
TYPES = {name: code for code, name in TYPE_NAMES.items()}

# Topic id types (flags bits 1-0).
NORMAL, PREDEFINED, SHORT = 0, 1, 2
TOPIC_TYPE_NAMES = {NORMAL: "normal", PREDEFINED: "predefined", SHORT: "short"}

# Return codes.
ACCEPTED, CONGESTION, INVALID_TOPIC_ID, NOT_SUPPORTED = 0x00, 0x01, 0x02, 0x03
RETURN_CODE_NAMES = {ACCEPTED: "accepted", CONGESTION: "rejected: congestion",
                     INVALID_TOPIC_ID: "rejected: invalid topic id", NOT_SUPPORTED: "rejected: not supported"}

PROTOCOL_ID = 0x01
MAX_CLIENT_ID = 23

_DUP, _RETAIN, _WILL, _CLEAN = 0x80, 0x10, 0x08, 0x04
_QOS_BITS = {0: 0b00, 1: 0b01, 2: 0b10, -1: 0b11}
_QOS_OF_BITS = {bits: qos for qos, bits in _QOS_BITS.items()}


@dataclass
class Packet:
    """One MQTT-SN message; only the fields of its `type` mean anything.

    `topic` is a topic name (REGISTER, WILLTOPIC, SUBSCRIBE by name); `topic_id` a topic id or,
    with topic_type SHORT, the two characters of a short topic name as one integer (see
    `short_id`). `data` is a PUBLISH payload or a will message; `duration` a keepalive, sleep or
    advertise period in seconds (None: absent, as in a DISCONNECT that is no sleep).
    """

    type: int
    dup: bool = False
    qos: int = 0
    retain: bool = False
    will: bool = False
    clean: bool = False
    topic_type: int = NORMAL
    topic_id: int = 0
    msg_id: int = 0
    topic: str | None = None
    data: bytes = b""
    return_code: int = ACCEPTED
    duration: int | None = None
    client_id: str | None = None
    gw_id: int = 0
    gw_add: bytes = b""
    radius: int = 0
    protocol_id: int = PROTOCOL_ID
    ctrl: int = 0
    node_id: bytes = b""

    @property
    def name(self) -> str:
        return TYPE_NAMES.get(self.type, f"0x{self.type:02x}")

    def __str__(self) -> str:
        return describe(self)


def short_id(name: str) -> int:
    """A two-character short topic name as the topic id field carries it."""
    raw = name.encode()
    if len(raw) != 2:
        raise ValueError(f"short topic name {name!r} must be exactly two bytes")
    return raw[0] << 8 | raw[1]


def short_name(topic_id: int) -> str:
    """The short topic name a topic id field of type SHORT carries."""
    return bytes((topic_id >> 8 & 0xFF, topic_id & 0xFF)).decode("utf-8", "replace")


def describe(p: Packet) -> str:
    """One line: the type and the fields that matter for it."""
    parts = [p.name]
    if p.type in (PUBLISH, SUBSCRIBE, UNSUBSCRIBE, SUBACK, WILLTOPIC, WILLTOPICUPD):
        parts.append(f"q{p.qos}" + ("D" if p.dup else "") + ("R" if p.retain else ""))
    if p.type == CONNECT:
        parts.extend(flag for flag, on in (("will", p.will), ("clean", p.clean)) if on)
    if p.type in (PUBLISH, SUBSCRIBE, UNSUBSCRIBE) and (p.type == PUBLISH or p.topic_type != NORMAL):
        shown = short_name(p.topic_id) if p.topic_type == SHORT else p.topic_id
        parts.append(f"id={shown}({TOPIC_TYPE_NAMES.get(p.topic_type, '?')})")
    elif p.type in (REGISTER, REGACK, PUBACK, SUBACK):
        parts.append(f"id={p.topic_id}")
    if p.type in (REGISTER, REGACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK, UNSUBSCRIBE,
                  UNSUBACK) and (p.msg_id or p.type != PUBLISH):
        parts.append(f"mid={p.msg_id}")
    if p.topic is not None:
        parts.append(repr(p.topic))
    if p.client_id is not None:
        parts.append(f"client={p.client_id!r}")
    if p.duration is not None:
        parts.append(f"{p.duration}s")
    if p.type in (CONNACK, REGACK, PUBACK, SUBACK, WILLTOPICRESP, WILLMSGRESP) and p.return_code:
        parts.append(RETURN_CODE_NAMES.get(p.return_code, f"rc=0x{p.return_code:02x}"))
    if p.type in (ADVERTISE, GWINFO):
        parts.append(f"gw={p.gw_id}")
    if p.type in (PUBLISH, WILLMSG, WILLMSGUPD):
        parts.append(f"{len(p.data)}B")
    return " ".join(parts)


# ----------------------------------------------------------------------------- flags


def flags_of(p: Packet) -> int:
    """The flags octet of a packet."""
    if p.qos not in _QOS_BITS:
        raise ValueError(f"{p.name}: QoS {p.qos} is not -1, 0, 1 or 2")
    if p.topic_type not in (NORMAL, PREDEFINED, SHORT):
        raise ValueError(f"{p.name}: topic id type {p.topic_type} is not 0, 1 or 2")
    return ((_DUP if p.dup else 0) | _QOS_BITS[p.qos] << 5 | (_RETAIN if p.retain else 0)
            | (_WILL if p.will else 0) | (_CLEAN if p.clean else 0) | p.topic_type)


def _apply_flags(p: Packet, flags: int) -> None:
    p.dup, p.qos, p.retain = bool(flags & _DUP), _QOS_OF_BITS[flags >> 5 & 3], bool(flags & _RETAIN)
    p.will, p.clean, p.topic_type = bool(flags & _WILL), bool(flags & _CLEAN), flags & 3


# ----------------------------------------------------------------------------- encode


def _text(value: str | None) -> bytes:
    return (value or "").encode("utf-8")


def _body(p: Packet) -> bytes:
    t = p.type
    if t == ADVERTISE:
        return struct.pack("!BH", p.gw_id, p.duration or 0)
    if t == SEARCHGW:
        return bytes((p.radius,))
    if t == GWINFO:
        return bytes((p.gw_id,)) + p.gw_add
    if t == CONNECT:
        return struct.pack("!BBH", flags_of(p), p.protocol_id, p.duration or 0) + _text(p.client_id)
    if t in (CONNACK, WILLTOPICRESP, WILLMSGRESP):
        return bytes((p.return_code,))
    if t in (WILLTOPICREQ, WILLMSGREQ, PINGRESP):
        return b""
    if t in (WILLTOPIC, WILLTOPICUPD):
        if p.topic is None:  # empty: delete the will
            return b""
        return bytes((flags_of(p),)) + _text(p.topic)
    if t in (WILLMSG, WILLMSGUPD):
        return bytes(p.data)
    if t == REGISTER:
        return struct.pack("!HH", p.topic_id, p.msg_id) + _text(p.topic)
    if t in (REGACK, PUBACK):
        return struct.pack("!HHB", p.topic_id, p.msg_id, p.return_code)
    if t == PUBLISH:
        return struct.pack("!BHH", flags_of(p), p.topic_id, p.msg_id) + bytes(p.data)
    if t in (PUBREC, PUBREL, PUBCOMP, UNSUBACK):
        return struct.pack("!H", p.msg_id)
    if t in (SUBSCRIBE, UNSUBSCRIBE):
        head = struct.pack("!BH", flags_of(p), p.msg_id)
        return head + (_text(p.topic) if p.topic_type == NORMAL else struct.pack("!H", p.topic_id))
    if t == SUBACK:
        return struct.pack("!BHHB", flags_of(p), p.topic_id, p.msg_id, p.return_code)
    if t == PINGREQ:
        return _text(p.client_id)
    if t == DISCONNECT:
        return b"" if p.duration is None else struct.pack("!H", p.duration)
    if t == ENCAPSULATED:
        return bytes((p.ctrl,)) + p.node_id + bytes(p.data)
    raise ValueError(f"cannot encode MQTT-SN message type 0x{t:02x}: unknown type")


def frame(msg_type: int, body: bytes) -> bytes:
    """A message from its type and body: the length header in front (3 octets from 256 on)."""
    n = len(body) + 2
    if n < 256:
        return bytes((n, msg_type)) + body
    if n + 2 > 0xFFFF:
        raise ValueError(f"MQTT-SN message of {n + 2} bytes is longer than 65535")
    return struct.pack("!BHB", 1, n + 2, msg_type) + body


def encode(p: Packet) -> bytes:
    """The datagram of a packet."""
    if p.type == ENCAPSULATED:  # its length covers only the encapsulation header
        header = bytes((p.ctrl,)) + p.node_id
        return bytes((len(header) + 2, ENCAPSULATED)) + header + bytes(p.data)
    return frame(p.type, _body(p))


# ----------------------------------------------------------------------------- decode


def _need(body: bytes, n: int, what: str) -> None:
    if len(body) < n:
        raise ValueError(f"{what} needs at least {n} bytes after the header, got {len(body)}")


def _exact(body: bytes, n: int, what: str) -> None:
    if len(body) != n:
        raise ValueError(f"{what} must have {n} bytes after the header, got {len(body)}")


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not valid UTF-8 (byte {exc.start})") from None


def split(datagram: bytes) -> tuple[int, bytes]:
    """(message type, body) of a datagram; ValueError when its length header is wrong."""
    data = bytes(datagram)
    if len(data) < 2:
        raise ValueError(f"datagram of {len(data)} byte(s) is too short for an MQTT-SN header")
    if data[0] == 0x01:
        if len(data) < 4:
            raise ValueError("three-byte length header truncated")
        length, at = data[1] << 8 | data[2], 3
        if length < 256:
            raise ValueError(f"three-byte length header holds {length}, below 256")
    else:
        if data[0] == 0:
            raise ValueError("length field is 0")
        length, at = data[0], 1
    if data[at] == ENCAPSULATED:  # the length covers the encapsulation header only
        if length < at + 2 or length > len(data):
            raise ValueError(f"encapsulation length {length} does not fit the {len(data)}-byte datagram")
        return ENCAPSULATED, data[at + 1:]
    if length != len(data):
        raise ValueError(f"length field says {length} bytes, the datagram has {len(data)}")
    return data[at], data[at + 1:]


def decode(datagram: bytes) -> Packet:
    """The packet in one datagram; ValueError (one line, naming the fault) when it is malformed."""
    t, body = split(datagram)
    name = TYPE_NAMES.get(t)
    if name is None:
        raise ValueError(f"unknown message type 0x{t:02x}")
    p = Packet(t)
    if t == ADVERTISE:
        _exact(body, 3, name)
        p.gw_id, p.duration = struct.unpack("!BH", body)
    elif t == SEARCHGW:
        _exact(body, 1, name)
        p.radius = body[0]
    elif t == GWINFO:
        _need(body, 1, name)
        p.gw_id, p.gw_add = body[0], body[1:]
    elif t == CONNECT:
        _need(body, 5, name)
        flags, p.protocol_id, p.duration = struct.unpack_from("!BBH", body)
        _apply_flags(p, flags)
        p.client_id = _utf8(body[4:], "client id")
    elif t in (CONNACK, WILLTOPICRESP, WILLMSGRESP):
        _exact(body, 1, name)
        p.return_code = body[0]
    elif t in (WILLTOPICREQ, WILLMSGREQ, PINGRESP):
        _exact(body, 0, name)
    elif t in (WILLTOPIC, WILLTOPICUPD):
        if body:
            _apply_flags(p, body[0])
            p.topic = _utf8(body[1:], "will topic")
    elif t in (WILLMSG, WILLMSGUPD):
        p.data = body
    elif t == REGISTER:
        _need(body, 5, name)
        p.topic_id, p.msg_id = struct.unpack_from("!HH", body)
        p.topic = _utf8(body[4:], "topic name")
    elif t in (REGACK, PUBACK):
        _exact(body, 5, name)
        p.topic_id, p.msg_id, p.return_code = struct.unpack("!HHB", body)
    elif t == PUBLISH:
        _need(body, 5, name)
        flags, p.topic_id, p.msg_id = struct.unpack_from("!BHH", body)
        _apply_flags(p, flags)
        p.data = body[5:]
    elif t in (PUBREC, PUBREL, PUBCOMP, UNSUBACK):
        _exact(body, 2, name)
        (p.msg_id,) = struct.unpack("!H", body)
    elif t in (SUBSCRIBE, UNSUBSCRIBE):
        _need(body, 3, name)
        flags, p.msg_id = struct.unpack_from("!BH", body)
        _apply_flags(p, flags)
        if p.topic_type == NORMAL:
            p.topic = _utf8(body[3:], "topic name")
        else:
            _exact(body, 5, f"{name} by topic id")
            (p.topic_id,) = struct.unpack_from("!H", body, 3)
    elif t == SUBACK:
        _exact(body, 6, name)
        flags, p.topic_id, p.msg_id, p.return_code = struct.unpack("!BHHB", body)
        _apply_flags(p, flags)
    elif t == PINGREQ:
        p.client_id = _utf8(body, "client id") if body else None
    elif t == DISCONNECT:
        if body:
            _exact(body, 2, name)
            (p.duration,) = struct.unpack("!H", body)
    elif t == ENCAPSULATED:
        data = bytes(datagram)
        at, length = (3, data[1] << 8 | data[2]) if data[0] == 0x01 else (1, data[0])
        p.ctrl, p.node_id, p.data = data[at + 1], data[at + 2:length], data[length:]
    return p
