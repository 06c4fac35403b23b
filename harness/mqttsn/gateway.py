"""An MQTT-SN 1.2 gateway in the harness: UDP on one side, the test's MQTT broker on the other.

Written from the MQTT-SN 1.2 specification. Transparent (one MQTT connection per client, see
bridge.py), on loopback by default. It speaks: gateway discovery (ADVERTISE at start and every
`advertise_every` seconds to the broadcast address, GWINFO in answer to SEARCHGW); CONNECT with
the will handshake (WILLTOPICREQ, WILLTOPIC, WILLMSGREQ, WILLMSG) and will updates; REGISTER and
REGACK both ways; PUBLISH at QoS -1 (predefined ids and short names, no connection needed), 0,
1 and 2 both ways; SUBSCRIBE and UNSUBSCRIBE by topic name (wildcards too: the gateway REGISTERs
each new topic to the client before the first PUBLISH on it), by predefined id and by short
name; keep-alive supervision; sleeping clients (DISCONNECT with a duration: messages for the
client are buffered; a PINGREQ with its client id wakes it, the buffered messages go down, then
PINGRESP). A client whose keep-alive (or, asleep, its sleep duration) runs out, times
`tolerance`, is lost and the broker fires its will.

Choices where the specification leaves room: a CONNECT with clean session 0 from a client that
is active, asleep or awake resumes its session (its ids, subscriptions and buffered messages);
clean session 1 starts anew, except that the very CONNECT just accepted, sent again before
anything else came from the client, is a retransmission (its CONNACK was lost or late) and
is answered with CONNACK again. A message that needs a session from an address the gateway
cannot map to a client (PUBLISH, REGISTER, SUBSCRIBE, a PINGREQ with an unknown client id) is
answered with DISCONNECT, so the client connects again. A QoS 1 PUBLISH with the DUP flag and a
message id the gateway forwarded recently is acknowledged without forwarding it twice. A
message the client does not acknowledge within `retries` retransmissions stays queued until the
client is heard from again. GWINFO answers the searcher directly (unicast). A PUBACK from the
client rejecting a topic id makes the gateway REGISTER the topic again once.

Timers run on the host's clock; `supervision_scale` (seconds of host time per second of
keep-alive or sleep duration, 1.0) lets a test wait out a keep-alive quickly.

Everything runs in one thread; `traffic` records every datagram (see record.py).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import ipaddress
import queue
import selectors
import socket
import threading
import time
from typing import Any, Callable

from ..errors import HarnessError, MqttError
from ..mqtt.topics import topic_matches
from . import packets as sn
from .bridge import Bridge
from .packets import Packet
from .record import DOWN, UP, SnTraffic
from .session import (ACTIVE, ASLEEP, AWAKE, CONNECTING, DISCONNECTED, LOST, STATES, Downlink, Inflight, Session,
                      Subscription)
from .topics import TopicIds, has_wildcards

DEFAULT_PORT = 1885  # MQTT-SN has no registered port; 1885 is common. The harness picks a free one by default.
LOOPBACK_BROADCAST = "127.255.255.255"
BRIDGE_CHECK_S = 1.0
RECEIVE_BUFFER = 4 << 20


def _lan_address() -> str:
    """The address other machines reach this host on (the interface of the default route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent, the kernel only picks a route
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())


class Gateway:
    """An MQTT-SN gateway bridging UDP clients to `broker` (anything with .host, .port and
    .credentials: the `broker` fixture's amqtt, mosquitto or external broker)."""

    def __init__(self, broker: Any, *, host: str = "127.0.0.1", port: int = 0, gw_id: int = 1,
                 predefined: dict[int, str] | None = None, advertise_every: int = 900,
                 advertise_host: str | None = None, retry_s: float = 0.1, retries: int = 5,
                 tolerance: float = 1.5, supervision_scale: float = 1.0, max_buffered: int = 1000,
                 bridge_timeout: float = 3.0) -> None:
        try:
            listen = ipaddress.IPv4Address(host)
        except ValueError:
            raise HarnessError(f"MQTT-SN gateway: listen address {host!r} is not an IPv4 address "
                               "(127.0.0.1 for loopback, 0.0.0.0 for the LAN)") from None
        if not 0 <= gw_id <= 255:
            raise ValueError(f"MQTT-SN gateway: gw_id {gw_id} must be 0..255")
        if retry_s <= 0 or retries < 0 or tolerance < 1 or supervision_scale <= 0 or max_buffered < 1:
            raise ValueError("MQTT-SN gateway: retry_s, supervision_scale must be above 0, retries >= 0, "
                             "tolerance >= 1, max_buffered >= 1")
        self.broker = broker
        self.listen_host, self.gw_id = host, gw_id
        self.predefined: dict[int, str] = {}
        for topic_id, name in (predefined or {}).items():
            self._check_predefined(topic_id, name)
            self.predefined[topic_id] = name
        self.advertise_every, self.retry_s, self.retries = advertise_every, retry_s, retries
        self.tolerance, self.supervision_scale, self.max_buffered = tolerance, supervision_scale, max_buffered
        self.bridge_timeout = bridge_timeout
        self._loopback = listen.is_loopback
        self._any = host == "0.0.0.0"
        self._host = advertise_host or (_lan_address() if self._any else host)
        self.port = port
        self.traffic = SnTraffic()
        self.events: collections.deque = collections.deque(maxlen=2000)  # (time.time(), text)
        self.restarts = 0
        self.errors: list[str] = []  # faults of the gateway itself (a bug), one line each
        self._sessions: dict[str, Session] = {}
        self._by_addr: dict[tuple, str] = {}
        self._cond = threading.Condition()  # notified on every state change
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._crash = False
        self._sock: socket.socket | None = None
        self._bsock: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._own: Bridge | None = None  # the gateway's own connection, for QoS -1 publishes
        self._next_advertise = 0.0
        self._next_check = 0.0

    # ------------------------------------------------------------------ where it is
    @property
    def host(self) -> str:
        """The address clients send to."""
        return self._host

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def broadcast_address(self) -> tuple[str, int]:
        """Where clients broadcast SEARCHGW and the gateway broadcasts ADVERTISE."""
        return (LOOPBACK_BROADCAST if self._loopback else "255.255.255.255"), self.port

    @property
    def running(self) -> bool:
        return self._thread is not None

    def __repr__(self) -> str:
        return (f"<MQTT-SN Gateway {self.listen_host}:{self.port} gw {self.gw_id} -> "
                f"{self.broker.host}:{self.broker.port}>")

    # ------------------------------------------------------------------ lifetime
    def start(self) -> "Gateway":
        """Bind the UDP sockets and start the gateway's thread (fresh state: no sessions)."""
        if self._thread is not None:
            return self
        self._bind()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._selector.register(self._sock, selectors.EVENT_READ)
        if self._bsock is not None:
            self._selector.register(self._bsock, selectors.EVENT_READ)
        self._sessions.clear()
        self._by_addr.clear()
        self._stopping = self._crash = False
        self._next_advertise = time.monotonic()  # ADVERTISE once at start
        self._next_check = time.monotonic() + BRIDGE_CHECK_S
        self._thread = threading.Thread(target=self._run, name=f"hil-mqttsn-{self.port}", daemon=True)
        self._thread.start()
        self._event(f"gateway up on {self.listen_host}:{self.port}")
        return self

    def _bind(self) -> None:
        for _attempt in range(10):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            # Room for a burst of QoS 0 datagrams while the thread forwards (the kernel caps it
            # at net.core.rmem_max; its default, 208 KiB, holds only about 200 small datagrams).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            try:
                sock.bind((self.listen_host, self.port))
            except OSError as exc:
                sock.close()
                raise HarnessError(f"MQTT-SN gateway: cannot listen on UDP {self.listen_host}:{self.port} "
                                   f"({exc.strerror}); pass port=0 for a free one") from None
            port = sock.getsockname()[1]
            bsock = None
            if self._loopback:  # a unicast-bound socket gets no broadcasts: a second one does
                bsock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                bsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    bsock.bind((LOOPBACK_BROADCAST, port))
                except OSError:
                    bsock.close()
                    sock.close()
                    if self.port:
                        raise HarnessError(f"MQTT-SN gateway: cannot listen for broadcasts on "
                                           f"{LOOPBACK_BROADCAST}:{self.port}; pass port=0") from None
                    continue  # a free unicast port whose broadcast twin is taken: another one
                bsock.setblocking(False)
            sock.setblocking(False)
            self._sock, self._bsock, self.port = sock, bsock, port
            return
        raise HarnessError("MQTT-SN gateway: no free UDP port with a free broadcast twin on loopback")

    def stop(self, crash: bool = False) -> None:
        """Stop the thread, close every bridge (crash=True: dropped, so the broker fires the
        clients' wills) and the sockets. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._crash = crash
        self._stopping = True
        self._wake()
        thread.join(15)
        self._thread = None
        self._event("gateway down" + (" (crash)" if crash else ""))

    def restart(self, downtime: float = 0.0, crash: bool = False) -> None:
        """Go down and come back on the same port with no state (sessions, topic ids and buffered
        messages lost, as when a gateway process restarts); `crash` drops the MQTT connections so
        the broker fires the clients' wills."""
        self.stop(crash=crash)
        time.sleep(downtime)  # the downtime itself: the gateway is away, nothing to wait for
        self.restarts += 1
        self.start()

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ thread plumbing
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (OSError, AttributeError):
            pass

    def _post(self, fn: Callable, *args: Any) -> None:
        """Run fn(*args) in the gateway's thread soon (from any thread, never blocks)."""
        self._inbox.put((fn, args))
        self._wake()

    def _call(self, fn: Callable, *args: Any) -> Any:
        """Run fn(*args) in the gateway's thread and return its result."""
        thread = self._thread
        if thread is None:
            raise HarnessError(f"{self!r} is not running; start() it or use it as a context manager")
        if threading.current_thread() is thread:
            return fn(*args)
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                future.set_exception(exc)

        self._post(run)
        return future.result(15)

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, _ in self._selector.select(self._timeout()):
                    if key.fileobj is self._wake_r:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except BlockingIOError:
                            pass
                    else:
                        self._read(key.fileobj)
                while not self._stopping:
                    try:
                        fn, args = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    try:
                        fn(*args)
                    except Exception as exc:  # noqa: BLE001 - reported, the gateway goes on
                        self.errors.append(f"{getattr(fn, '__name__', fn)}: {type(exc).__name__}: {exc}")
                        self._event(self.errors[-1])
                try:
                    self._timers()
                except Exception as exc:  # noqa: BLE001 - reported, the gateway goes on
                    self.errors.append(f"timers: {type(exc).__name__}: {exc}")
                    self._event(self.errors[-1])
        finally:
            self._teardown()

    def _teardown(self) -> None:
        for session in self._sessions.values():
            if session.bridge is not None:
                try:
                    session.bridge.close(fire_will=self._crash)
                except OSError:
                    pass
                session.bridge = None
        if self._own is not None:
            self._own.close()
            self._own = None
        while True:  # what arrived for the old sessions goes with them
            try:
                self._inbox.get_nowait()
            except queue.Empty:
                break
        self._selector.close()
        for sock in (self._sock, self._bsock, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._sock = self._bsock = self._wake_r = self._wake_w = None

    def _timeout(self) -> float | None:
        now = time.monotonic()
        due = [self._next_check]
        if self.advertise_every:
            due.append(self._next_advertise)
        for s in self._sessions.values():
            if s.inflight is not None and s.inflight.due is not None and s.deliverable:
                due.append(s.inflight.due)
            deadline = s.supervision(self.tolerance, self.supervision_scale)
            if deadline is not None:
                due.append(deadline)
        return max(0.0, min(due) - now)

    def _read(self, sock: socket.socket) -> None:
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. an ICMP error reported on the socket: nothing to read
                return
            if addr[1] == self.port and addr[0] in (self.listen_host, self._host):
                continue  # our own ADVERTISE, heard on the broadcast socket
            self._datagram(data, addr)

    def _event(self, text: str) -> None:
        self.events.append((time.time(), text))

    def _set_state(self, s: Session, state: str) -> None:
        if s.state != state:
            self._event(f"{s.client_id}: {s.state} -> {state}")
        s.state = state
        with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------------ sending and recording
    def _resolve(self, s: Session | None, p: Packet) -> str | None:
        """The topic name a packet's topic id stands for, for the record."""
        if p.type in (sn.PUBLISH, sn.SUBACK, sn.REGACK) or (p.type in (sn.SUBSCRIBE, sn.UNSUBSCRIBE)
                                                             and p.topic_type != sn.NORMAL):
            if p.topic_type == sn.PREDEFINED and p.type != sn.REGACK:
                return self.predefined.get(p.topic_id)
            if p.topic_type == sn.SHORT and p.type != sn.REGACK:
                return sn.short_name(p.topic_id)
            return s.topics.name(sn.NORMAL, p.topic_id) if s is not None else None
        return p.topic

    def _send(self, addr: tuple, p: Packet, s: Session | None = None) -> None:
        self._transmit(addr, sn.encode(p), p, s, None)

    def _send_raw(self, addr: tuple, raw: bytes, s: Session | None = None) -> None:
        """Send bytes as they are (fault injection); recorded decoded when they decode."""
        try:
            p, error = sn.decode(raw), None
        except ValueError as exc:
            p, error = None, str(exc)
        self._transmit(addr, raw, p, s, error)

    def _transmit(self, addr: tuple, raw: bytes, p: Packet | None, s: Session | None, error: str | None) -> None:
        # Recorded before it leaves: whoever saw it arrive finds it in the record.
        cid = s.client_id if s is not None else self._by_addr.get(addr)
        record = self.traffic.add(DOWN, addr, cid, p, raw, self._resolve(s, p) if p is not None else None, error)
        try:
            self._sock.sendto(raw, addr)
        except OSError as exc:
            record.error = f"not sent: {exc.strerror or exc}"

    def _bind_address(self, s: Session, addr: tuple) -> None:
        if s.address != addr and self._by_addr.get(s.address) == s.client_id:
            del self._by_addr[s.address]
        s.address = addr
        self._by_addr[addr] = s.client_id

    # ------------------------------------------------------------------ receiving
    def _datagram(self, data: bytes, addr: tuple) -> None:
        try:
            p = sn.decode(data)
        except ValueError as exc:
            self.traffic.add(UP, addr, self._by_addr.get(addr), None, data, error=str(exc))
            return
        if p.type in (sn.CONNECT, sn.PINGREQ) and p.client_id:
            s = self._sessions.get(p.client_id)
        else:
            cid = self._by_addr.get(addr)
            s = self._sessions.get(cid) if cid is not None else None
        self.traffic.add(UP, addr, s.client_id if s is not None else p.client_id, p, data, self._resolve(s, p))
        if s is not None and s.state not in (LOST, DISCONNECTED) and (s.address == addr or p.type in
                                                                      (sn.CONNECT, sn.PINGREQ)):
            s.last_heard = time.monotonic()
        if s is not None and p.type != sn.CONNECT:
            s.just_connected = False
        handler = self._HANDLERS.get(p.type)
        if handler is not None:
            try:
                handler(self, p, addr, s)
            except Exception as exc:  # noqa: BLE001 - one datagram must not take the gateway down
                self.errors.append(f"handling {p} from {addr[0]}:{addr[1]}: {type(exc).__name__}: {exc}")
                self._event(self.errors[-1])
        if s is not None and s.inflight is not None and s.inflight.due is None and s.deliverable:
            self._retransmit(s)  # parked after its retries: the client is back, try again

    def _need_session(self, s: Session | None, addr: tuple) -> bool:
        """True when `s` can carry a session message; else the client is told to connect again."""
        if s is not None and s.state in (ACTIVE, AWAKE) and s.address == addr:
            return True
        self._send(addr, Packet(sn.DISCONNECT), s if s is not None and s.address == addr else None)
        return False

    # -- discovery
    def _on_searchgw(self, p: Packet, addr: tuple, s: Session | None) -> None:
        self._send(addr, Packet(sn.GWINFO, gw_id=self.gw_id))

    def _advertise(self) -> None:
        self._next_advertise = time.monotonic() + (self.advertise_every or 0)
        duration = min(self.advertise_every or 0xFFFF, 0xFFFF)
        self._send(self.broadcast_address, Packet(sn.ADVERTISE, gw_id=self.gw_id, duration=duration))

    # -- connection
    def _on_connect(self, p: Packet, addr: tuple, s: Session | None) -> None:
        cid = p.client_id or ""
        if p.protocol_id != sn.PROTOCOL_ID or not cid or len(cid.encode()) > sn.MAX_CLIENT_ID:
            self._send(addr, Packet(sn.CONNACK, return_code=sn.NOT_SUPPORTED))
            return
        if s is not None and s.just_connected and s.state == ACTIVE and s.address == addr and p.clean == s.clean \
                and (p.duration or 0) == s.keepalive:
            # The same CONNECT again before anything else: its CONNACK was lost or late (a client
            # retries after its own timer), not a new session.
            self._send(addr, Packet(sn.CONNACK), s)
            return
        if s is not None and not p.clean and s.state in (ACTIVE, ASLEEP, AWAKE):
            # Back to active (from asleep or awake), or a CONNECT sent again because the CONNACK was lost.
            self._bind_address(s, addr)
            s.keepalive = p.duration or 0
            try:
                s.bridge.ensure()
            except MqttError:
                self._send(addr, Packet(sn.CONNACK, return_code=sn.CONGESTION), s)
                return
            self._set_state(s, ACTIVE)
            self._send(addr, Packet(sn.CONNACK), s)
            self._pump(s)
            return
        if s is None:
            s = self._sessions[cid] = Session(cid, addr, TopicIds(self.predefined))
        elif s.bridge is not None:
            s.bridge.close()  # the old connection leaves quietly: no will for a reconnect
            s.bridge = None
        if p.clean:
            s.reset()
        s.outbox.clear()
        s.inflight = None
        s.will = s.will_topic = None
        s.clean, s.keepalive, s.last_heard = p.clean, p.duration or 0, time.monotonic()
        self._bind_address(s, addr)
        if p.will:
            self._set_state(s, CONNECTING)
            self._send(addr, Packet(sn.WILLTOPICREQ), s)
            return
        self._open(s)

    def _open(self, s: Session) -> None:
        """Connect the client's bridge and send CONNACK."""
        bridge = Bridge(self.broker, s.client_id, self._listener(s), clean=s.clean, will=s.will,
                        timeout=self.bridge_timeout)
        bridge.subscriptions = {sub.topic_filter: sub.qos for sub in s.subscriptions.values()}
        try:
            bridge.open()
        except MqttError as exc:
            self._event(f"{s.client_id}: {exc}")
            self._set_state(s, DISCONNECTED)
            self._send(s.address, Packet(sn.CONNACK, return_code=sn.CONGESTION), s)
            return
        s.bridge = bridge
        self._set_state(s, ACTIVE)
        self._send(s.address, Packet(sn.CONNACK), s)
        s.just_connected = True
        self._pump(s)

    def _listener(self, s: Session):
        def on_message(topic: str, payload: bytes, qos: int, retain: bool, dup: bool, client_id: str | None) -> None:
            self._post(self._from_broker, s, topic, payload, qos, retain)
        return on_message

    def _on_willtopic(self, p: Packet, addr: tuple, s: Session | None) -> None:
        if s is None or s.state != CONNECTING or s.address != addr:
            return
        if p.topic is None:  # an empty WILLTOPIC: no will after all
            self._open(s)
            return
        s.will_topic = (p.topic, max(p.qos, 0), p.retain)
        self._send(addr, Packet(sn.WILLMSGREQ), s)

    def _on_willmsg(self, p: Packet, addr: tuple, s: Session | None) -> None:
        if s is None or s.address != addr:
            return
        if s.state == ACTIVE and s.will is not None:
            self._send(addr, Packet(sn.CONNACK), s)  # the CONNACK was lost: the client asks again
        elif s.state == CONNECTING and s.will_topic is not None:
            topic, qos, retain = s.will_topic
            s.will = (topic, bytes(p.data), qos, retain)
            self._open(s)

    def _on_willtopicupd(self, p: Packet, addr: tuple, s: Session | None) -> None:
        if not self._need_session(s, addr):
            return
        message = s.will[1] if s.will else b""
        s.will = None if p.topic is None else (p.topic, message, max(p.qos, 0), p.retain)
        self._send(addr, Packet(sn.WILLTOPICRESP, return_code=self._renew_will(s)), s)

    def _on_willmsgupd(self, p: Packet, addr: tuple, s: Session | None) -> None:
        if not self._need_session(s, addr):
            return
        if s.will is None:
            self._send(addr, Packet(sn.WILLMSGRESP, return_code=sn.NOT_SUPPORTED), s)
            return
        s.will = (s.will[0], bytes(p.data), s.will[2], s.will[3])
        self._send(addr, Packet(sn.WILLMSGRESP, return_code=self._renew_will(s)), s)

    def _renew_will(self, s: Session) -> int:
        """MQTT sets a will only at CONNECT: reconnect the bridge with the new one."""
        s.bridge.close()
        s.bridge.will = s.will
        try:
            s.bridge.open()
        except MqttError:
            return sn.CONGESTION
        return sn.ACCEPTED

    def _on_pingreq(self, p: Packet, addr: tuple, s: Session | None) -> None:
        if p.client_id:  # a sleeping client waking up, or checking in
            if s is None or s.state not in (ACTIVE, ASLEEP, AWAKE):
                self._send(addr, Packet(sn.DISCONNECT), s)
                return
            self._bind_address(s, addr)
            if s.state == ASLEEP:
                self._set_state(s, AWAKE)
                try:
                    s.bridge.ensure()
                except MqttError:
                    pass  # deliver what is buffered; the bridge is retried by the periodic check
                for raw in s.injected:
                    self._send_raw(addr, raw, s)
                s.injected.clear()
        if s is not None and s.state == AWAKE and s.address == addr:
            if s.inflight is not None:
                self._retransmit(s)  # it is listening now
            self._pump(s)  # PINGRESP once the buffer is empty
            return
        self._send(addr, Packet(sn.PINGRESP), s if s is not None and s.address == addr else None)

    def _on_disconnect(self, p: Packet, addr: tuple, s: Session | None) -> None:
        if s is None or s.address != addr or s.state in (DISCONNECTED, LOST):
            self._send(addr, Packet(sn.DISCONNECT))
            return
        if p.duration:  # to sleep: keep the session, buffer what comes
            s.sleep = p.duration
            if s.inflight is not None:
                s.inflight.due = None  # retried at the wake
            self._set_state(s, ASLEEP)
            self._send(addr, Packet(sn.DISCONNECT), s)
            return
        if s.bridge is not None:
            s.bridge.close()
            s.bridge = None
        s.outbox.clear()
        s.inflight = None
        self._set_state(s, DISCONNECTED)
        self._send(addr, Packet(sn.DISCONNECT), s)
        if self._by_addr.get(addr) == s.client_id:
            del self._by_addr[addr]

    # -- topics and publishing upward
    def _on_register(self, p: Packet, addr: tuple, s: Session | None) -> None:
        if not self._need_session(s, addr):
            return
        if not p.topic or has_wildcards(p.topic):
            self._send(addr, Packet(sn.REGACK, msg_id=p.msg_id, return_code=sn.NOT_SUPPORTED), s)
            return
        self._send(addr, Packet(sn.REGACK, topic_id=s.topics.register(p.topic), msg_id=p.msg_id), s)

    def _on_publish(self, p: Packet, addr: tuple, s: Session | None) -> None:
        if p.qos == -1:
            self._publish_qos_minus_one(p)
            return
        if not self._need_session(s, addr):
            return
        name = s.topics.name(p.topic_type, p.topic_id)
        if name is None or p.topic_type not in (sn.NORMAL, sn.PREDEFINED, sn.SHORT):
            self._send(addr, Packet(sn.PUBACK, topic_id=p.topic_id, msg_id=p.msg_id,
                                    return_code=sn.INVALID_TOPIC_ID), s)
            return
        if p.qos == 1 and p.dup and p.msg_id in s.recent_qos1:
            self._send(addr, Packet(sn.PUBACK, topic_id=p.topic_id, msg_id=p.msg_id), s)  # forwarded already
            return
        if p.qos == 2 and p.msg_id in s.qos2_in:
            self._send(addr, Packet(sn.PUBREC, msg_id=p.msg_id), s)
            return
        try:
            s.bridge.publish(name, bytes(p.data), p.qos, p.retain)
        except MqttError as exc:
            self._event(f"{s.client_id}: {exc}")
            if p.qos:
                self._send(addr, Packet(sn.PUBACK, topic_id=p.topic_id, msg_id=p.msg_id,
                                        return_code=sn.CONGESTION), s)
            return
        if p.qos == 1:
            s.recent_qos1.append(p.msg_id)
            self._send(addr, Packet(sn.PUBACK, topic_id=p.topic_id, msg_id=p.msg_id), s)
        elif p.qos == 2:
            s.qos2_in.add(p.msg_id)
            self._send(addr, Packet(sn.PUBREC, msg_id=p.msg_id), s)

    def _publish_qos_minus_one(self, p: Packet) -> None:
        """QoS -1: no connection, a predefined id or a short name; nothing is answered."""
        if p.topic_type == sn.PREDEFINED:
            name = self.predefined.get(p.topic_id)
        elif p.topic_type == sn.SHORT:
            name = sn.short_name(p.topic_id)
        else:
            name = None
        if name is None:
            self._event(f"QoS -1 PUBLISH with unusable topic id {p.topic_id} dropped")
            return
        try:
            if self._own is None:
                self._own = Bridge(self.broker, f"hil-mqttsn-gw{self.gw_id}-{self.port}", lambda *a: None,
                                   timeout=self.bridge_timeout)
            self._own.publish(name, bytes(p.data), 0, p.retain)
        except MqttError as exc:
            self._event(str(exc))

    def _on_pubrel(self, p: Packet, addr: tuple, s: Session | None) -> None:
        if s is not None and s.address == addr:
            s.qos2_in.discard(p.msg_id)
            self._send(addr, Packet(sn.PUBCOMP, msg_id=p.msg_id), s)
        else:
            self._send(addr, Packet(sn.DISCONNECT))

    # -- subscriptions
    def _filter_of(self, p: Packet) -> tuple[str | None, int, int]:
        """(topic filter, topic id for the SUBACK, return code) of a SUBSCRIBE or UNSUBSCRIBE."""
        if p.topic_type == sn.NORMAL:
            if not p.topic:
                return None, 0, sn.NOT_SUPPORTED
            return p.topic, 0, sn.ACCEPTED
        if p.topic_type == sn.PREDEFINED:
            name = self.predefined.get(p.topic_id)
            return name, p.topic_id, sn.ACCEPTED if name is not None else sn.INVALID_TOPIC_ID
        if p.topic_type == sn.SHORT:
            return sn.short_name(p.topic_id), 0, sn.ACCEPTED
        return None, 0, sn.NOT_SUPPORTED

    def _on_subscribe(self, p: Packet, addr: tuple, s: Session | None) -> None:
        if not self._need_session(s, addr):
            return
        topic_filter, topic_id, code = self._filter_of(p)
        if topic_filter is None:
            self._send(addr, Packet(sn.SUBACK, topic_id=topic_id, msg_id=p.msg_id, return_code=code), s)
            return
        if p.topic_type == sn.NORMAL and not has_wildcards(topic_filter):
            topic_id = s.topics.register(topic_filter)
        try:
            granted = s.bridge.subscribe(topic_filter, max(p.qos, 0))
        except MqttError as exc:
            self._event(f"{s.client_id}: {exc}")
            code = sn.NOT_SUPPORTED if "refused" in str(exc) else sn.CONGESTION
            self._send(addr, Packet(sn.SUBACK, topic_id=topic_id, msg_id=p.msg_id, return_code=code), s)
            return
        s.subscriptions[topic_filter] = Subscription(topic_filter, granted, p.topic_type)
        self._send(addr, Packet(sn.SUBACK, qos=granted, topic_id=topic_id, msg_id=p.msg_id), s)

    def _on_unsubscribe(self, p: Packet, addr: tuple, s: Session | None) -> None:
        if not self._need_session(s, addr):
            return
        topic_filter, _topic_id, _code = self._filter_of(p)
        if topic_filter is not None:
            s.subscriptions.pop(topic_filter, None)
            s.bridge.forget(topic_filter)  # what still arrives on it is filtered out (wants())
        self._send(addr, Packet(sn.UNSUBACK, msg_id=p.msg_id), s)

    # -- delivery downward
    def _from_broker(self, s: Session, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if self._sessions.get(s.client_id) is not s or s.state in (DISCONNECTED, LOST):
            return
        if s.wants(topic, topic_matches) is None:
            return
        s.outbox.append(Downlink(topic, payload, qos, retain))
        if len(s.outbox) > self.max_buffered:
            s.outbox.popleft()
            s.dropped += 1
            self._event(f"{s.client_id}: buffer full, oldest message dropped ({s.dropped} so far)")
        self._pump(s)
        with self._cond:
            self._cond.notify_all()  # wait_buffered

    def _topic_ref(self, s: Session, topic: str) -> tuple[int, int] | None:
        """(topic id type, id) a message on `topic` goes down with; None: REGISTER it first."""
        sub = s.wants(topic, topic_matches)
        if sub is not None and sub.topic_type == sn.SHORT and len(topic.encode()) == 2:
            return sn.SHORT, sn.short_id(topic)
        if sub is not None and sub.topic_type == sn.PREDEFINED:
            topic_id = s.topics.predefined_id(topic)
            if topic_id is not None:
                return sn.PREDEFINED, topic_id
        topic_id = s.topics.normal_id(topic)
        return (sn.NORMAL, topic_id) if topic_id is not None else None

    def _pump(self, s: Session) -> None:
        """Send what may go down now; an awake client gets PINGRESP once nothing is left."""
        while s.deliverable and s.inflight is None and s.outbox:
            message = s.outbox.popleft()
            ref = self._topic_ref(s, message.topic)
            if ref is None:
                mid = s.msg_id()
                packet = Packet(sn.REGISTER, topic_id=s.topics.register(message.topic), msg_id=mid,
                                topic=message.topic)
                s.inflight = Inflight(message, "register", packet, mid, due=time.monotonic() + self.retry_s)
                self._send(s.address, packet, s)
                break
            self._publish_down(s, message, ref)
        if s.state == AWAKE and s.inflight is None and not s.outbox:
            s.last_heard = time.monotonic()  # the sleep timer starts again
            self._set_state(s, ASLEEP)
            self._send(s.address, Packet(sn.PINGRESP), s)

    def _publish_down(self, s: Session, message: Downlink, ref: tuple[int, int]) -> None:
        mid = s.msg_id() if message.qos else 0
        packet = Packet(sn.PUBLISH, qos=message.qos, retain=message.retain, topic_type=ref[0], topic_id=ref[1],
                        msg_id=mid, data=message.payload)
        if message.qos:
            s.inflight = Inflight(message, "publish", packet, mid, due=time.monotonic() + self.retry_s)
        self._send(s.address, packet, s)

    def _retransmit(self, s: Session) -> None:
        inflight = s.inflight
        if inflight.packet.type == sn.PUBLISH and not inflight.packet.dup:
            inflight.packet = dataclasses.replace(inflight.packet, dup=True)  # the record keeps the first
        inflight.tries += 1
        inflight.due = time.monotonic() + self.retry_s
        self._send(s.address, inflight.packet, s)

    def _answer_for(self, s: Session | None, addr: tuple, phase: str, msg_id: int) -> Inflight | None:
        if s is None or s.address != addr or s.inflight is None:
            return None
        if s.inflight.phase != phase or s.inflight.msg_id != msg_id:
            return None
        return s.inflight

    def _on_regack(self, p: Packet, addr: tuple, s: Session | None) -> None:
        inflight = self._answer_for(s, addr, "register", p.msg_id)
        if inflight is None:
            return
        s.inflight = None
        if p.return_code == sn.ACCEPTED:
            self._publish_down(s, inflight.message, (sn.NORMAL, inflight.packet.topic_id))
        else:
            s.topics.forget(inflight.message.topic)
            self._event(f"{s.client_id}: REGACK refused {inflight.message.topic!r}; message dropped")
        self._pump(s)

    def _on_puback(self, p: Packet, addr: tuple, s: Session | None) -> None:
        inflight = self._answer_for(s, addr, "publish", p.msg_id)
        if inflight is None or inflight.message.qos != 1:
            return
        s.inflight = None
        if p.return_code == sn.INVALID_TOPIC_ID:  # the client has no such id (it lost its state)
            s.topics.forget(inflight.message.topic)
            if not inflight.message.rejected:  # REGISTER it and send it again, once
                inflight.message.rejected = True
                s.outbox.appendleft(inflight.message)
        self._pump(s)

    def _on_pubrec(self, p: Packet, addr: tuple, s: Session | None) -> None:
        inflight = self._answer_for(s, addr, "publish", p.msg_id) or self._answer_for(s, addr, "pubrel", p.msg_id)
        if inflight is None or inflight.message.qos != 2:
            return
        inflight.phase, inflight.tries = "pubrel", 1
        inflight.packet = Packet(sn.PUBREL, msg_id=p.msg_id)
        inflight.due = time.monotonic() + self.retry_s
        self._send(addr, inflight.packet, s)

    def _on_pubcomp(self, p: Packet, addr: tuple, s: Session | None) -> None:
        if self._answer_for(s, addr, "pubrel", p.msg_id) is None:
            return
        s.inflight = None
        self._pump(s)

    # ------------------------------------------------------------------ timers
    def _timers(self) -> None:
        now = time.monotonic()
        for s in list(self._sessions.values()):
            inflight = s.inflight
            if inflight is not None and inflight.due is not None and now >= inflight.due and s.deliverable:
                if inflight.tries > self.retries:
                    inflight.due = None  # parked until the client is heard from again
                else:
                    self._retransmit(s)
            deadline = s.supervision(self.tolerance, self.supervision_scale)
            if deadline is not None and now >= deadline:
                self._lose(s)
        if self.advertise_every and now >= self._next_advertise:
            self._advertise()
        if now >= self._next_check:
            # Polled: the harness's MQTT client announces nothing when its connection drops.
            self._next_check = now + BRIDGE_CHECK_S
            for s in self._sessions.values():
                if s.bridge is not None and s.state in (ACTIVE, ASLEEP, AWAKE) and not s.bridge.up:
                    try:
                        s.bridge.open()
                        self._event(f"{s.client_id}: bridge reconnected")
                    except MqttError:
                        pass

    def _lose(self, s: Session) -> None:
        """The client's keep-alive or sleep ran out: drop its MQTT connection, so its will fires."""
        self._event(f"{s.client_id}: lost ({s.state}, nothing heard for "
                    f"{(s.keepalive if s.state in (ACTIVE, CONNECTING) else s.sleep) * self.tolerance:g} s)")
        if s.bridge is not None:
            s.bridge.close(fire_will=True)
            s.bridge = None
        s.outbox.clear()
        s.inflight = None
        if self._by_addr.get(s.address) == s.client_id:
            del self._by_addr[s.address]
        self._set_state(s, LOST)

    # ------------------------------------------------------------------ the test's side
    @staticmethod
    def _check_predefined(topic_id: int, name: str) -> None:
        if not 1 <= topic_id <= 0xFFFE:
            raise ValueError(f"predefined topic id {topic_id} must be 1..65534")
        if not name or has_wildcards(name):
            raise ValueError(f"predefined topic id {topic_id}: {name!r} must be a topic name without wildcards")

    def predefine(self, topic_id: int, name: str) -> None:
        """Add a predefined topic id (the firmware must know it too)."""
        self._check_predefined(topic_id, name)
        if self._thread is None:
            self.predefined[topic_id] = name
        else:
            self._call(self.predefined.__setitem__, topic_id, name)

    def advertise(self) -> None:
        """Broadcast an ADVERTISE now."""
        self._call(self._advertise)

    def send_raw(self, address: tuple[str, int], data: bytes) -> None:
        """Send a datagram as it is from the gateway's socket (malformed ones too)."""
        self._call(self._send_raw, tuple(address), bytes(data))

    def inject(self, client_id: str, *datagrams: bytes, when: str = "wake") -> None:
        """Send raw datagrams to a client from the gateway (fault injection, fuzzing): at its next
        wake (when="wake": right after its PINGREQ, ahead of the buffered messages, while it
        listens), or now to its last address (when="now")."""
        if when not in ("wake", "now"):
            raise ValueError(f"inject: when={when!r} must be 'wake' or 'now'")

        def queue_them() -> None:
            s = self._sessions.get(client_id)
            if s is None:
                raise HarnessError(f"MQTT-SN gateway: no client {client_id!r} has connected; "
                                   f"known: {', '.join(self._sessions) or 'none'}")
            if when == "now":
                for raw in datagrams:
                    self._send_raw(s.address, bytes(raw), s)
            else:
                s.injected.extend(bytes(raw) for raw in datagrams)
        self._call(queue_them)

    def forget_topics(self, client_id: str) -> None:
        """Forget a client's normal topic ids, as a gateway that lost them would: its next PUBLISH
        with one is answered 'invalid topic id' and it must REGISTER again."""
        def forget() -> None:
            s = self._sessions.get(client_id)
            if s is None:
                raise HarnessError(f"MQTT-SN gateway: no client {client_id!r} has connected")
            s.topics.clear()
        self._call(forget)

    def state(self, client_id: str) -> str | None:
        """A client's state (connecting, active, asleep, awake, disconnected, lost), or None."""
        s = self._sessions.get(client_id)
        return s.state if s is not None else None

    def wait_state(self, client_id: str, state: str, timeout: float = 5.0) -> None:
        """Wait until a client is in `state`; TelemetryError with the recent traffic if it is not."""
        if state not in STATES:
            raise ValueError(f"MQTT-SN client state {state!r}: use one of {', '.join(STATES)}")
        with self._cond:
            if self._cond.wait_for(lambda: self.state(client_id) == state, timeout):
                return
        raise self.traffic.fail(f"MQTT-SN client {client_id!r} is {self.state(client_id) or 'unknown'}, "
                                f"not {state}, after {timeout} s")

    def buffered(self, client_id: str) -> int:
        """How many messages wait at the gateway for a client (asleep: until its next wake)."""
        s = self._sessions.get(client_id)
        return len(s.outbox) if s is not None else 0

    def wait_buffered(self, client_id: str, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least `count` messages are held for a client: a command published while
        it sleeps has reached the gateway and waits for the wake."""
        with self._cond:
            if self._cond.wait_for(lambda: self.buffered(client_id) >= count, timeout):
                return
        raise self.traffic.fail(f"MQTT-SN client {client_id!r} ({self.state(client_id) or 'unknown'}) has "
                                f"{self.buffered(client_id)} message(s) held, not {count}, after {timeout} s")

    def sessions(self) -> dict[str, dict]:
        """A snapshot of every client: state, address, topic ids, subscriptions, buffered messages."""
        def snapshot() -> dict[str, dict]:
            return {cid: {"state": s.state, "address": s.address, "keepalive": s.keepalive, "sleep": s.sleep,
                          "topics": s.topics.registered, "subscriptions": sorted(s.subscriptions),
                          "buffered": len(s.outbox), "dropped": s.dropped, "will": s.will[0] if s.will else None}
                    for cid, s in self._sessions.items()}
        return self._call(snapshot)

    _HANDLERS: dict[int, Callable] = {
        sn.SEARCHGW: _on_searchgw, sn.CONNECT: _on_connect, sn.WILLTOPIC: _on_willtopic,
        sn.WILLMSG: _on_willmsg, sn.WILLTOPICUPD: _on_willtopicupd, sn.WILLMSGUPD: _on_willmsgupd,
        sn.REGISTER: _on_register, sn.REGACK: _on_regack, sn.PUBLISH: _on_publish, sn.PUBACK: _on_puback,
        sn.PUBREC: _on_pubrec, sn.PUBREL: _on_pubrel, sn.PUBCOMP: _on_pubcomp, sn.SUBSCRIBE: _on_subscribe,
        sn.UNSUBSCRIBE: _on_unsubscribe, sn.PINGREQ: _on_pingreq, sn.DISCONNECT: _on_disconnect,
    }
