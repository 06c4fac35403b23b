"""The harness's own small blocking MQTT-SN client: probes, tests of a gateway, benchmarks.

Deliberately literal: `send` puts one packet on the wire, `expect` waits for the next packet of
a type (remembering the others it read meanwhile), and the conveniences (connect, register,
publish, subscribe, sleep, wake) are one exchange each, without retries, so a test sees exactly
what went over UDP. Messages the gateway sends on its own (PUBLISH, REGISTER) are kept in
`received` and acknowledged when `auto_ack` is on.
"""

from __future__ import annotations

import socket
import time

from ..errors import HarnessError
from . import packets as sn
from .packets import Packet


class SnClient:
    """One UDP socket talking MQTT-SN to `gateway` (host, port)."""

    def __init__(self, gateway: tuple[str, int], client_id: str = "hil-sn", *, timeout: float = 2.0,
                 auto_ack: bool = True) -> None:
        self.gateway = (gateway[0], int(gateway[1]))
        self.client_id, self.timeout, self.auto_ack = client_id, timeout, auto_ack
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.bind(("127.0.0.1" if self.gateway[0].startswith("127.") else "0.0.0.0", 0))
        self.topics: dict[str, int] = {}       # topic name -> normal id, as the gateway told us
        self.names: dict[int, str] = {}        # normal id -> topic name
        self.received: list[Packet] = []       # PUBLISHes the gateway sent, in order
        self._pending: list[tuple[Packet, tuple]] = []
        self._next_id = 1
        self.last_source: tuple | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def msg_id(self) -> int:
        mid, self._next_id = self._next_id, self._next_id % 0xFFFF + 1
        return mid

    # ------------------------------------------------------------------ the wire
    def send(self, packet: Packet | bytes, to: tuple[str, int] | None = None) -> None:
        """One datagram to the gateway (or `to`): a Packet, or raw bytes as they are."""
        raw = packet if isinstance(packet, (bytes, bytearray)) else sn.encode(packet)
        self.sock.sendto(bytes(raw), to or self.gateway)

    def recv(self, timeout: float | None = None) -> Packet | None:
        """The next packet from anyone (None on timeout); what the gateway sends on its own is
        noted (and acknowledged with auto_ack)."""
        if self._pending:
            packet, self.last_source = self._pending.pop(0)
            return packet
        return self._read(timeout)

    def _read(self, timeout: float | None) -> Packet | None:
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data, source = self.sock.recvfrom(65535)
        except socket.timeout:
            return None
        self.last_source = source
        packet = sn.decode(data)
        self._note(packet)
        return packet

    def _note(self, p: Packet) -> None:
        if p.type == sn.REGISTER:
            self.names[p.topic_id], self.topics[p.topic] = p.topic, p.topic_id
            if self.auto_ack:
                self.send(Packet(sn.REGACK, topic_id=p.topic_id, msg_id=p.msg_id))
        elif p.type == sn.PUBLISH:
            self.received.append(p)
            if self.auto_ack and p.qos == 1:
                self.send(Packet(sn.PUBACK, topic_id=p.topic_id, msg_id=p.msg_id))
            elif self.auto_ack and p.qos == 2:
                self.send(Packet(sn.PUBREC, msg_id=p.msg_id))
        elif p.type == sn.PUBREL and self.auto_ack:
            self.send(Packet(sn.PUBCOMP, msg_id=p.msg_id))

    def expect(self, msg_type: int, timeout: float | None = None, msg_id: int | None = None) -> Packet:
        """The next packet of `msg_type` (and `msg_id`); others read meanwhile stay readable by
        later calls. HarnessError naming what came instead when none arrives in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        skipped: list[tuple[Packet, tuple]] = []
        for i, (packet, source) in enumerate(self._pending):
            if packet.type == msg_type and (msg_id is None or packet.msg_id == msg_id):
                del self._pending[i]
                self.last_source = source
                return packet
        try:
            while True:
                left = deadline - time.monotonic()
                packet = self.recv(max(left, 0.001)) if left > 0 else None
                if packet is None:
                    seen = ", ".join(str(p) for p, _ in skipped) or "nothing"
                    raise HarnessError(f"MQTT-SN client {self.client_id!r}: no {sn.TYPE_NAMES.get(msg_type)} from "
                                       f"{self.gateway[0]}:{self.gateway[1]} within the timeout (got {seen})")
                if packet.type == msg_type and (msg_id is None or packet.msg_id == msg_id):
                    return packet
                skipped.append((packet, self.last_source))
        finally:
            self._pending.extend(skipped)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "SnClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ exchanges
    def search(self, broadcast: tuple[str, int], radius: int = 1) -> tuple[int, tuple]:
        """SEARCHGW to a broadcast address; (gateway id, the GWINFO's source address)."""
        self.send(Packet(sn.SEARCHGW, radius=radius), to=broadcast)
        info = self.expect(sn.GWINFO)
        return info.gw_id, self.last_source

    def connect(self, keepalive: int = 60, clean: bool = True,
                will: tuple[str, bytes, int, bool] | None = None) -> int:
        """CONNECT (with the will handshake); the CONNACK's return code."""
        self.send(Packet(sn.CONNECT, clean=clean, will=will is not None, duration=keepalive,
                         client_id=self.client_id))
        if will is not None:
            self.expect(sn.WILLTOPICREQ)
            topic, message, qos, retain = will
            self.send(Packet(sn.WILLTOPIC, topic=topic, qos=qos, retain=retain))
            self.expect(sn.WILLMSGREQ)
            self.send(Packet(sn.WILLMSG, data=message))
        return self.expect(sn.CONNACK).return_code

    def register(self, topic: str) -> int:
        """REGISTER a topic name; its id (HarnessError if refused)."""
        mid = self.msg_id()
        self.send(Packet(sn.REGISTER, msg_id=mid, topic=topic))
        ack = self.expect(sn.REGACK, msg_id=mid)
        if ack.return_code != sn.ACCEPTED:
            raise HarnessError(f"MQTT-SN gateway refused REGISTER {topic!r}: "
                               f"{sn.RETURN_CODE_NAMES.get(ack.return_code, ack.return_code)}")
        self.topics[topic], self.names[ack.topic_id] = ack.topic_id, topic
        return ack.topic_id

    def publish(self, topic: str | int, payload: bytes | str = b"", qos: int = 0, retain: bool = False,
                topic_type: int = sn.NORMAL, dup: bool = False, msg_id: int | None = None) -> Packet | None:
        """PUBLISH to a name (registered first if need be; two characters go as a short name) or
        an id of `topic_type`; the PUBACK (QoS 1) or PUBCOMP (QoS 2), else None."""
        if isinstance(topic, str):
            if len(topic.encode()) == 2 and topic_type in (sn.NORMAL, sn.SHORT):
                topic_type, topic = sn.SHORT, sn.short_id(topic)
            else:
                topic = self.topics.get(topic) or self.register(topic)
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        mid = (msg_id or self.msg_id()) if qos in (1, 2) else 0
        self.send(Packet(sn.PUBLISH, qos=qos, retain=retain, dup=dup, topic_type=topic_type, topic_id=topic,
                         msg_id=mid, data=data))
        if qos == 1:
            return self.expect(sn.PUBACK, msg_id=mid)
        if qos == 2:
            self.expect(sn.PUBREC, msg_id=mid)
            self.send(Packet(sn.PUBREL, msg_id=mid))
            return self.expect(sn.PUBCOMP, msg_id=mid)
        return None

    def subscribe(self, topic: str | int, qos: int = 0, topic_type: int = sn.NORMAL) -> Packet:
        """SUBSCRIBE by name (two characters: as a short name), or by predefined id; the SUBACK."""
        mid = self.msg_id()
        if isinstance(topic, str) and len(topic.encode()) == 2 and topic_type in (sn.NORMAL, sn.SHORT):
            packet = Packet(sn.SUBSCRIBE, qos=qos, topic_type=sn.SHORT, topic_id=sn.short_id(topic), msg_id=mid)
        elif isinstance(topic, str):
            packet = Packet(sn.SUBSCRIBE, qos=qos, topic_type=sn.NORMAL, topic=topic, msg_id=mid)
        else:
            packet = Packet(sn.SUBSCRIBE, qos=qos, topic_type=topic_type, topic_id=topic, msg_id=mid)
        self.send(packet)
        ack = self.expect(sn.SUBACK, msg_id=mid)
        if isinstance(topic, str) and packet.topic_type == sn.NORMAL and ack.topic_id:
            self.topics[topic], self.names[ack.topic_id] = ack.topic_id, topic
        return ack

    def unsubscribe(self, topic: str) -> None:
        mid = self.msg_id()
        self.send(Packet(sn.UNSUBSCRIBE, topic=topic, msg_id=mid))
        self.expect(sn.UNSUBACK, msg_id=mid)

    def ping(self, wake: bool = False) -> list[Packet]:
        """PINGREQ (with the client id when `wake`: a sleeping client fetching what was buffered);
        the PUBLISHes received before the PINGRESP."""
        before = len(self.received)
        self.send(Packet(sn.PINGREQ, client_id=self.client_id if wake else None))
        self.expect(sn.PINGRESP)
        return self.received[before:]

    def sleep(self, duration: int) -> None:
        """DISCONNECT with a duration: asleep."""
        self.send(Packet(sn.DISCONNECT, duration=duration))
        self.expect(sn.DISCONNECT)

    def disconnect(self) -> None:
        self.send(Packet(sn.DISCONNECT))
        self.expect(sn.DISCONNECT)

    def messages(self, n: int, timeout: float | None = None) -> list[Packet]:
        """Wait until `n` PUBLISHes have been received in all; return them."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.received) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError(f"MQTT-SN client {self.client_id!r}: {len(self.received)} of {n} "
                                   "PUBLISHes received within the timeout")
            packet = self._read(left)
            if packet is not None and packet.type != sn.PUBLISH:
                self._pending.append((packet, self.last_source))
        return self.received[:n]

    def topic_of(self, p: Packet) -> str | None:
        """The topic name a received PUBLISH's topic id stands for (normal and short ids)."""
        if p.topic_type == sn.SHORT:
            return sn.short_name(p.topic_id)
        return self.names.get(p.topic_id) if p.topic_type == sn.NORMAL else None
