# MQTT-SN 1.2 client for MicroPython (UDP), written for this project from the MQTT-SN 1.2
# specification. Runs on an ESP32 and on the unix port.
#
# One exchange at a time: a request is sent, then the answer is awaited for `retry_ms` and the
# request sent again (PUBLISH with the DUP flag) up to `retries` times, then OSError(ETIMEDOUT).
# Whatever the gateway sends on its own while the client waits (PUBLISH, REGISTER, PUBREL) is
# handled there: acknowledged, and PUBLISHes handed to the callback. A datagram that is not
# valid MQTT-SN (a length that lies, an unknown type, a truncated body) is counted in
# `malformed` and ignored; a PUBLISH with a topic id the client does not know is answered
# "invalid topic id" (counted in `rejected`). Topic names are bytes.
import select
import socket
import time

from micropython import const

ADVERTISE = const(0x00)
SEARCHGW = const(0x01)
GWINFO = const(0x02)
CONNECT = const(0x04)
CONNACK = const(0x05)
WILLTOPICREQ = const(0x06)
WILLTOPIC = const(0x07)
WILLMSGREQ = const(0x08)
WILLMSG = const(0x09)
REGISTER = const(0x0A)
REGACK = const(0x0B)
PUBLISH = const(0x0C)
PUBACK = const(0x0D)
PUBCOMP = const(0x0E)
PUBREC = const(0x0F)
PUBREL = const(0x10)
SUBSCRIBE = const(0x12)
SUBACK = const(0x13)
UNSUBSCRIBE = const(0x14)
UNSUBACK = const(0x15)
PINGREQ = const(0x16)
PINGRESP = const(0x17)
DISCONNECT = const(0x18)

NORMAL = const(0)
PREDEFINED = const(1)
SHORT = const(2)

ACCEPTED = const(0)
CONGESTION = const(1)
INVALID_TOPIC_ID = const(2)
NOT_SUPPORTED = const(3)

ETIMEDOUT = const(110)
_MAX_STRAY = const(64)  # unrelated packets handled in one wait before it counts as a timeout

# Shortest body of each answer the client waits for.
_MIN_BODY = {ADVERTISE: 3, GWINFO: 1, CONNACK: 1, WILLTOPICREQ: 0, WILLMSGREQ: 0, REGACK: 5, PUBACK: 5,
             PUBREC: 2, PUBCOMP: 2, SUBACK: 6, UNSUBACK: 2, PINGRESP: 0, DISCONNECT: 0}


class MQTTSNError(Exception):
    """The gateway refused: `code` is its return code (-1: it disconnected the client)."""

    def __init__(self, what, code):
        super().__init__(what, code)
        self.code = code


class GatewayLost(MQTTSNError):
    """The gateway answered DISCONNECT: it has no session for this client; connect again."""


def _u16(b, i):
    return b[i] << 8 | b[i + 1]


def _be(n):
    return bytes((n >> 8 & 255, n & 255))


def frame(msg_type, body):
    """A whole message: the length header (three octets from 256 bytes on), type, body."""
    n = len(body) + 2
    if n < 256:
        return bytes((n, msg_type)) + body
    n += 2
    return bytes((1, n >> 8, n & 255, msg_type)) + body


def parse(data):
    """(type, body) of a datagram, or None when its length header does not match it."""
    n = len(data)
    if n < 2:
        return None
    if data[0] == 1:
        if n < 4:
            return None
        length, at = data[1] << 8 | data[2], 3
    else:
        length, at = data[0], 1
    if length != n:
        return None
    return data[at], data[at + 1:]


def _unknown(t):
    """Whether a type octet names no MQTT-SN 1.2 message."""
    return (t > 0x1D and t != 0xFE) or t in (0x03, 0x11, 0x19)


def hostport(addr):
    """(host, port) of a socket address: a tuple on the ESP32, a raw sockaddr_in on the unix port."""
    if isinstance(addr, tuple):
        return addr[0], addr[1]
    a = bytes(addr)
    return "%d.%d.%d.%d" % (a[4], a[5], a[6], a[7]), a[2] << 8 | a[3]


class Client:
    def __init__(self, client_id, gateway=None, keepalive=60, retry_ms=1000, retries=5):
        self.cid = client_id.encode() if isinstance(client_id, str) else bytes(client_id)
        self.keepalive = keepalive
        self.retry_ms = retry_ms
        self.retries = retries
        self.gw = None
        self.gw_id = None
        self.src = None
        if gateway:
            self.set_gateway(gateway[0], gateway[1])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)
        self.topics = {}       # topic name -> normal topic id
        self.names = {}        # normal topic id -> topic name
        self.own = {}          # the topics this client registered or subscribed to: kept by state()
        self.predefined = {}   # predefined topic id -> name, as the firmware agreed with the gateway
        self.mid = 1
        self.cb = None
        self.malformed = 0
        self.rejected = 0
        self.delivered = 0
        self.renewed = 0       # topic ids registered again after the gateway rejected one
        self.last_mid = 0      # the message id of the latest QoS 1/2 publish
        self._q2 = []          # QoS 2 message ids delivered, awaiting PUBREL

    # -- setup
    def set_gateway(self, host, port):
        self.gw = socket.getaddrinfo(host, port)[0][-1]

    def set_callback(self, cb):
        """cb(topic, msg, qos, retain) for each PUBLISH from the gateway (bytes, bytes)."""
        self.cb = cb

    def close(self):
        try:
            self.poller.unregister(self.sock)
        except Exception:
            pass
        self.sock.close()

    def state(self, all_ids=True):
        """What survives a deep sleep: the gateway's address, topic ids (the client's own, and
        with all_ids up to 16 the gateway registered to it), the next message id (so a
        retransmission after the wake still carries its id)."""
        gw = list(hostport(self.gw)) if self.gw is not None else None
        ids = {n.decode(): t for n, t in self.own.items()}
        learnt = {}
        if all_ids:
            for n, t in self.topics.items():
                if n not in self.own and len(n) <= 96 and len(learnt) < 16:
                    try:
                        learnt[n.decode()] = t
                    except UnicodeError:  # a name that is no text (a gateway's garbage): not kept
                        pass
        return {"gw": gw, "ids": ids, "learnt": learnt, "mid": self.mid}

    def restore(self, st):
        gw = st.get("gw")
        if gw:
            self.set_gateway(gw[0], gw[1])
        for name, tid in (st.get("learnt") or {}).items():
            self._learn(name.encode(), tid, False)
        for name, tid in (st.get("ids") or {}).items():
            self._learn(name.encode(), tid, True)
        self.mid = st.get("mid") or 1

    def forget(self):
        """Forget every topic id (a new session at the gateway)."""
        self.topics = {}
        self.names = {}
        self.own = {}
        self._q2 = []

    def _learn(self, name, tid, own):
        old = self.topics.get(name)
        if old is not None and self.names.get(old) == name:
            del self.names[old]
        self.topics[name] = tid
        self.names[tid] = name
        if own:
            self.own[name] = tid

    def _next_mid(self):
        m = self.mid
        self.mid = m % 65535 + 1
        return m

    # -- the wire
    def _send(self, msg_type, body, to=None):
        self.sock.sendto(frame(msg_type, body), to or self.gw)

    def _recv(self, ms):
        """The next valid (type, body), or None when nothing valid comes within `ms`."""
        deadline = time.ticks_add(time.ticks_ms(), ms)
        while True:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if not self.poller.poll(left if left > 0 else 0):
                return None
            try:
                data, self.src = self.sock.recvfrom(1024)
            except OSError:
                if left <= 0:
                    return None
                continue
            got = parse(data)
            if got is None or _unknown(got[0]):
                self.malformed += 1
                continue
            return got

    @staticmethod
    def _mid_of(t, b):
        if t in (REGACK, PUBACK):
            return _u16(b, 2)
        if t == SUBACK:
            return _u16(b, 3)
        return _u16(b, 0)

    def _await(self, wants, mid):
        """Wait for a packet of a type in `wants` (and message id `mid`, unless -1); (type, body)
        or None after `retry_ms` without one."""
        for _ in range(_MAX_STRAY):
            got = self._recv(self.retry_ms)
            if got is None:
                return None
            t, b = got
            if t in wants:
                if len(b) < _MIN_BODY.get(t, 0):
                    self.malformed += 1
                    continue
                if mid < 0 or self._mid_of(t, b) == mid:
                    return t, b
                continue  # a late answer to an earlier try
            if t == DISCONNECT:
                raise GatewayLost("the gateway disconnected the client", -1)
            self._handle(t, b)
        return None

    def _req(self, msg_type, body, wants, mid=-1, dup=False):
        """Send and wait for the answer, resending (PUBLISH with DUP after the first try)."""
        for attempt in range(self.retries + 1):
            if attempt and dup:
                body[0] |= 0x80
            self._send(msg_type, body)
            got = self._await(wants, mid)
            if got is not None:
                return got
        raise OSError(ETIMEDOUT)

    # -- what the gateway sends on its own
    def _handle(self, t, b):
        if t == PUBLISH:
            self._publish_in(b)
        elif t == REGISTER:
            if len(b) < 5:
                self.malformed += 1
                return
            tid = _u16(b, 0)
            if tid in (0, 0xFFFF):
                self._send(REGACK, b[0:4] + bytes((NOT_SUPPORTED,)))
                return
            self._learn(bytes(b[4:]), tid, False)
            self._send(REGACK, b[0:4] + bytes((ACCEPTED,)))
        elif t == PUBREL:
            if len(b) != 2:
                self.malformed += 1
                return
            mid = _u16(b, 0)
            if mid in self._q2:
                self._q2.remove(mid)
            self._send(PUBCOMP, b)
        elif t == ADVERTISE and self.gw is None and len(b) == 3:
            self.gw, self.gw_id = self.src, b[0]

    def _publish_in(self, b):
        if len(b) < 5:
            self.malformed += 1
            return
        flags = b[0]
        tid = _u16(b, 1)
        qos = flags >> 5 & 3
        if qos == 3:
            qos = -1
        kind = flags & 3
        if kind == NORMAL:
            topic = self.names.get(tid)
        elif kind == PREDEFINED:
            topic = self.predefined.get(tid)
        elif kind == SHORT:
            topic = bytes(b[1:3])
        else:
            topic = None
        if topic is None:
            self.rejected += 1
            if qos > 0:
                self._send(PUBACK, b[1:5] + bytes((INVALID_TOPIC_ID,)))
            return
        if qos == 2:
            mid = _u16(b, 3)
            if mid not in self._q2:
                self._q2.append(mid)
                if len(self._q2) > 16:
                    self._q2.pop(0)
                self._deliver(topic, b[5:], qos, flags & 0x10)
            self._send(PUBREC, b[3:5])
            return
        self._deliver(topic, b[5:], qos, flags & 0x10)
        if qos == 1:
            self._send(PUBACK, b[1:5] + bytes((ACCEPTED,)))

    def _deliver(self, topic, msg, qos, retain):
        self.delivered += 1
        if self.cb is not None:
            self.cb(topic, bytes(msg), qos, bool(retain))

    # -- discovery
    def search(self, host, port, radius=1):
        """SEARCHGW to a broadcast address; the gateway is whoever answers (GWINFO, or an
        ADVERTISE heard meanwhile). Returns the gateway id."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_BROADCAST", 0x20), 1)
        except OSError:
            pass
        dest = socket.getaddrinfo(host, port)[0][-1]
        for _ in range(self.retries + 1):
            self._send(SEARCHGW, bytes((radius,)), dest)
            got = self._await((GWINFO, ADVERTISE), -1)
            if got is not None:
                self.gw, self.gw_id = self.src, got[1][0]
                return self.gw_id
        raise OSError(ETIMEDOUT)

    # -- session
    def connect(self, clean=True, will=None):
        """CONNECT; will = (topic, message, qos, retain) answers the gateway's will requests.
        A clean session forgets every topic id."""
        flags = (0x04 if clean else 0) | (0x08 if will else 0)
        body = bytes((flags, 1)) + _be(self.keepalive) + self.cid
        for _ in range(self.retries + 1):
            self._send(CONNECT, body)
            while True:
                got = self._await((WILLTOPICREQ, WILLMSGREQ, CONNACK), -1)
                if got is None:
                    break  # CONNECT again: the gateway starts the handshake over
                t, b = got
                if t == WILLTOPICREQ:
                    topic = will[0] if will else b""
                    wflags = (will[2] & 3) << 5 | (0x10 if will[3] else 0) if will else 0
                    self._send(WILLTOPIC, bytes((wflags,)) + _enc(topic) if will else b"")
                elif t == WILLMSGREQ:
                    self._send(WILLMSG, _enc(will[1]) if will else b"")
                elif b[0] != ACCEPTED:
                    raise MQTTSNError("CONNECT refused", b[0])
                else:
                    if clean:
                        self.forget()
                    return
        raise OSError(ETIMEDOUT)

    def register(self, topic):
        """REGISTER a topic name; its topic id."""
        topic = _enc(topic)
        mid = self._next_mid()
        t, b = self._req(REGISTER, b"\0\0" + _be(mid) + topic, (REGACK,), mid)
        if b[4] != ACCEPTED:
            raise MQTTSNError("REGISTER refused", b[4])
        tid = _u16(b, 0)
        self._learn(topic, tid, True)
        return tid

    def publish(self, topic, msg, qos=0, retain=False, mid=0):
        """PUBLISH to a topic name (registered first if need be; two bytes go as a short name)
        or a predefined topic id (an int). QoS -1 needs no connection: predefined or short only.
        A QoS 1/2 publish that timed out may be retried later with the same `mid` (it is in
        `last_mid`): it then goes with DUP set, and the gateway forwards it only once."""
        msg = _enc(msg)
        if isinstance(topic, int):
            kind, tid = PREDEFINED, topic
        else:
            topic = _enc(topic)
            if len(topic) == 2:
                kind, tid = SHORT, topic[0] << 8 | topic[1]
            elif qos < 0:
                raise ValueError("QoS -1 needs a predefined topic id or a short topic name")
            else:
                kind, tid = NORMAL, self.topics.get(topic) or self.register(topic)
        if qos <= 0:
            self._send(PUBLISH, bytes(((qos & 3) << 5 | (0x10 if retain else 0) | kind,)) + _be(tid) + b"\0\0" + msg)
            return
        dup = mid != 0
        if not mid:
            mid = self._next_mid()
        self.last_mid = mid
        tries = 0
        while True:
            body = bytearray(((0x80 if dup else 0) | qos << 5 | (0x10 if retain else 0) | kind,)) + _be(tid) + _be(mid)
            body.extend(msg)
            t, b = self._req(PUBLISH, body, (PUBACK, PUBREC), mid, dup=True)
            if t == PUBREC:
                self._req(PUBREL, _be(mid), (PUBCOMP,), mid)
                return
            code = b[4]
            if code == ACCEPTED:
                return
            tries += 1
            if code == INVALID_TOPIC_ID and kind == NORMAL and tries == 1:
                # The gateway lost our id (it restarted, say): register again and resend.
                self.own.pop(topic, None)
                tid = self.register(topic)
                self.renewed += 1
                dup = False
            elif code == CONGESTION and tries <= self.retries:
                time.sleep_ms(self.retry_ms)
            else:
                raise MQTTSNError("PUBLISH refused", code)

    def subscribe(self, topic, qos=0):
        """SUBSCRIBE to a topic name or filter, a short name (two bytes) or a predefined id (an
        int); the topic id of the SUBACK (0 for filters and short names)."""
        if isinstance(topic, int):
            kind, tail = PREDEFINED, _be(topic)
        else:
            topic = _enc(topic)
            kind, tail = (SHORT, topic) if len(topic) == 2 else (NORMAL, topic)
        mid = self._next_mid()
        t, b = self._req(SUBSCRIBE, bytes(((qos & 3) << 5 | kind,)) + _be(mid) + tail, (SUBACK,), mid)
        if b[5] != ACCEPTED:
            raise MQTTSNError("SUBSCRIBE refused", b[5])
        tid = _u16(b, 1)
        if kind == NORMAL and tid:
            self._learn(topic, tid, True)
        return tid

    def unsubscribe(self, topic):
        if isinstance(topic, int):
            kind, tail = PREDEFINED, _be(topic)
        else:
            topic = _enc(topic)
            kind, tail = (SHORT, topic) if len(topic) == 2 else (NORMAL, topic)
        mid = self._next_mid()
        self._req(UNSUBSCRIBE, bytes((kind,)) + _be(mid) + tail, (UNSUBACK,), mid)

    def ping(self, wake=False):
        """PINGREQ; with wake=True it carries the client id: a sleeping client fetching what the
        gateway buffered, which arrives (to the callback) before the PINGRESP. GatewayLost when
        the gateway has no session for it."""
        self._req(PINGREQ, self.cid if wake else b"", (PINGRESP,))

    def sleep(self, seconds):
        """DISCONNECT with a duration: the gateway buffers messages until the next wake."""
        self._req(DISCONNECT, _be(seconds), (DISCONNECT,))

    def disconnect(self):
        self._req(DISCONNECT, b"", (DISCONNECT,))

    def check_msg(self, ms=0):
        """Handle what the gateway sent, waiting up to `ms` for the first packet; how many."""
        n = 0
        got = self._recv(ms)
        while got is not None:
            if got[0] == DISCONNECT:
                raise GatewayLost("the gateway disconnected the client", -1)
            self._handle(got[0], got[1])
            n += 1
            got = self._recv(0)
        return n


def _enc(s):
    return s.encode() if isinstance(s, str) else bytes(s)
