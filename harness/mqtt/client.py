"""The harness's own small blocking MQTT 3.1.1/5 client: capture on external brokers, commands, probes;
over plain TCP or TLS."""

from __future__ import annotations

import itertools
import socket
import ssl
import struct
import threading

from ..errors import MqttError
from .listener import Listener
from .tls_stream import TlsStream


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(data)) + data


class MqttClient:
    """A small blocking MQTT 3.1.1/5 client for the harness itself: capture, commands, probes.

    A reader thread answers acks and pings and hands each PUBLISH to `on_message` (same signature
    as a broker `Listener`); publish/subscribe wait for their acks. With `tls` (a client-side
    ssl.SSLContext: the CA, and a client certificate for mutual TLS) the session runs over TLS,
    the broker's certificate checked against `server_hostname` (default: `host`).
    """

    def __init__(self, host: str, port: int, client_id: str, username: str | None = None,
                 password: str | None = None, protocol: int = 4, keepalive: int = 60, clean: bool = True,
                 on_message: Listener | None = None, will: tuple[str, bytes, int, bool] | None = None,
                 timeout: float = 5.0, tls: ssl.SSLContext | None = None,
                 server_hostname: str | None = None) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.username, self.password, self.protocol = username, password, protocol
        self.keepalive, self.clean, self.on_message, self.will, self.timeout = keepalive, clean, on_message, will, timeout
        self.tls, self.server_hostname = tls, server_hostname
        self._sock: socket.socket | TlsStream | None = None
        self._send_lock = threading.Lock()
        self._ids = itertools.cycle(range(1, 65536))
        self._waiters: dict[tuple[int, int], list] = {}  # (packet type, id) -> [Event, payload]
        self._inbound_qos2: set[int] = set()
        self._reader: threading.Thread | None = None
        self.connected = False

    # wire helpers
    def _send(self, first: int, body: bytes) -> None:
        with self._send_lock:
            self._sock.sendall(bytes([first]) + _varint(len(body)) + body)

    def _recv_exact(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("connection closed by the broker")
            data += chunk
        return bytes(data)

    def _read_packet(self) -> tuple[int, bytes]:
        first = self._recv_exact(1)[0]
        length, shift = 0, 0
        while True:
            byte = self._recv_exact(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first, self._recv_exact(length) if length else b""

    def _props(self) -> bytes:
        return b"\0" if self.protocol == 5 else b""

    def _skip_props(self, body: bytes, at: int) -> int:
        if self.protocol != 5:
            return at
        length, shift = 0, 0
        while True:
            byte = body[at]
            at += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return at + length

    # session
    def connect(self) -> "MqttClient":
        """Open the connection (MQTT 5 falls back to 3.1.1 if the broker refuses it)."""
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise MqttError(f"cannot connect to MQTT broker {self.host}:{self.port}: {exc.strerror or exc}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            self._start_tls()
        flags = 0x02 if self.clean else 0
        payload = _utf8(self.client_id)
        if self.will:
            topic, message, qos, retain = self.will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            payload += self._props() + _utf8(topic) + _utf8(message)
        if self.username is not None:
            flags |= 0x80
            payload += _utf8(self.username)
        if self.password is not None:
            flags |= 0x40
            payload += _utf8(self.password)
        body = _utf8("MQTT") + bytes([self.protocol, flags]) + struct.pack("!H", self.keepalive) + self._props()
        try:
            self._send(0x10, body + payload)
            kind, reply = self._read_packet()
        except ssl.SSLError as exc:  # TLS 1.3: a refused client certificate shows only now
            self._sock.close()
            raise self._tls_error(exc) from None
        except OSError as exc:
            self._sock.close()
            if self.protocol == 5:  # a 3.1.1-only broker may just hang up on MQTT 5
                self.protocol = 4
                return self.connect()
            # A TLS 1.3 broker refuses a client certificate after the handshake, and amqtt just hangs up.
            hint = "; a mutual-TLS broker does so to a client without an accepted certificate" if self.tls else ""
            raise MqttError(f"MQTT broker {self.host}:{self.port} closed the connection during CONNECT ({exc}){hint}") from None
        code = reply[1] if len(reply) > 1 else 255
        if kind >> 4 != 2 or code != 0:
            self._sock.close()
            if self.protocol == 5 and code in (1, 0x84):
                self.protocol = 4
                return self.connect()
            raise MqttError(f"MQTT broker {self.host}:{self.port} refused client {self.client_id!r} "
                            f"(CONNACK code {code}); check the credentials")
        self._sock.settimeout(max(self.keepalive / 2, 0.5) if self.keepalive else None)
        self.connected = True
        self._reader = threading.Thread(target=self._read_loop, name=f"hil-mqtt-{self.client_id}", daemon=True)
        self._reader.start()
        return self

    def _start_tls(self) -> None:
        stream = TlsStream(self._sock, self.tls, self.server_hostname or self.host)
        try:
            stream.handshake()
        except (ssl.SSLError, ConnectionError, socket.timeout) as exc:
            stream.close()
            raise self._tls_error(exc) from None
        self._sock = stream

    def _tls_error(self, exc: Exception) -> MqttError:
        """One line on why TLS failed, with a hint at the usual cause."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            why = f"the broker's certificate did not verify ({exc.verify_message})"
        elif isinstance(exc, ssl.SSLError) and "CERTIFICATE_REQUIRED" in (exc.reason or ""):
            why = "the broker requires a client certificate (mutual TLS) and none was given"
        elif isinstance(exc, ssl.SSLError) and exc.reason:
            why = exc.reason.lower().replace("_", " ")
        elif isinstance(exc, socket.timeout):
            why = f"no answer within {self.timeout} s (is this port TLS?)"
        else:
            why = f"{exc}; is this port TLS?"
        return MqttError(f"TLS with MQTT broker {self.host}:{self.port} failed for client {self.client_id!r}: {why}")

    def _read_loop(self) -> None:
        try:
            while True:
                try:
                    first, body = self._read_packet()
                except socket.timeout:
                    self._send(0xC0, b"")  # keepalive
                    continue
                self._handle(first, body)
        except (OSError, ConnectionError, IndexError):
            pass
        finally:
            self.connected = False
            for waiter in list(self._waiters.values()):
                waiter[0].set()

    def _handle(self, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == 3:  # PUBLISH
            qos = (first >> 1) & 3
            tlen = struct.unpack_from("!H", body)[0]
            topic = body[2:2 + tlen].decode("utf-8", "replace")
            at = 2 + tlen
            pid = None
            if qos:
                pid = struct.unpack_from("!H", body, at)[0]
                at += 2
            at = self._skip_props(body, at)
            fresh = not (qos == 2 and pid in self._inbound_qos2)
            if fresh and self.on_message is not None:
                self.on_message(topic, body[at:], qos, bool(first & 1), bool(first & 8), None)
            if qos == 1:
                self._send(0x40, struct.pack("!H", pid))
            elif qos == 2:
                self._inbound_qos2.add(pid)
                self._send(0x50, struct.pack("!H", pid))
        elif kind == 6:  # PUBREL
            pid = struct.unpack_from("!H", body)[0]
            self._inbound_qos2.discard(pid)
            self._send(0x70, struct.pack("!H", pid))
        elif kind == 5:  # PUBREC: our QoS 2 publish, go on with PUBREL
            self._send(0x62, body[:2])
        elif kind in (4, 7, 9, 11):  # PUBACK, PUBCOMP, SUBACK, UNSUBACK
            self._wake((kind, struct.unpack_from("!H", body)[0]), body)
        elif kind == 13:  # PINGRESP
            self._wake((13, 0), body)

    def _wake(self, key: tuple[int, int], body: bytes) -> None:
        waiter = self._waiters.get(key)
        if waiter is not None:
            waiter[1] = body
            waiter[0].set()

    def _request(self, key: tuple[int, int], first: int, body: bytes, what: str, timeout: float | None) -> bytes:
        waiter = self._waiters[key] = [threading.Event(), None]
        try:
            self._send(first, body)
            if not waiter[0].wait(self.timeout if timeout is None else timeout) or waiter[1] is None:
                raise MqttError(f"MQTT broker {self.host}:{self.port} did not acknowledge {what} "
                                f"within {self.timeout if timeout is None else timeout} s")
            return waiter[1]
        finally:
            self._waiters.pop(key, None)

    def subscribe(self, topic_filter: str, qos: int = 0, retain_as_published: bool = False,
                  no_local: bool = False, timeout: float | None = None) -> int:
        """Subscribe and return the granted QoS (raises if the broker refused)."""
        pid = next(self._ids)
        options = qos | (0x04 if no_local else 0) | (0x08 if retain_as_published else 0)
        options = options if self.protocol == 5 else qos
        body = struct.pack("!H", pid) + self._props() + _utf8(topic_filter) + bytes([options])
        reply = self._request((9, pid), 0x82, body, f"SUBSCRIBE {topic_filter!r}", timeout)
        granted = reply[self._skip_props(reply, 2)]
        if granted >= 0x80:
            raise MqttError(f"MQTT broker {self.host}:{self.port} refused the subscription {topic_filter!r} "
                            f"(code {granted:#x})")
        return granted

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0, retain: bool = False,
                timeout: float | None = None) -> None:
        """Publish; QoS 1 and 2 return once the broker acknowledged."""
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        first = 0x30 | (qos << 1) | (1 if retain else 0)
        if not qos:
            self._send(first, _utf8(topic) + self._props() + data)
            return
        pid = next(self._ids)
        body = _utf8(topic) + struct.pack("!H", pid) + self._props() + data
        self._request((4 if qos == 1 else 7, pid), first, body, f"PUBLISH to {topic!r}", timeout)

    def ping(self, timeout: float | None = None) -> None:
        """A PINGREQ round trip: everything the broker sent before it has been handled."""
        self._request((13, 0), 0xC0, b"", "PINGREQ", timeout)

    def close(self, disconnect: bool = True) -> None:
        """Leave with DISCONNECT (no will), or just drop the connection (will fires)."""
        if self._sock is None:
            return
        try:
            if disconnect and self.connected:
                self._send(0xE0, b"")
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(5)
        self._sock = None

    def __enter__(self) -> "MqttClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
