"""The MQTT broker a board talks to: embedded amqtt, Debian's mosquitto, or an external one.

One `Broker` interface over the three kinds (.host, .port, .url, .credentials, .tls,
start/stop/restart, context manager) plus what tests need from a broker: capture of every routed
message (`add_listener`), retained state (`retained`), and faults (`restart`, `kick`, `mute_pings`).

TLS (`tls_mode` "server" or "mutual", as cloud brokers require): amqtt and mosquitto listen with
TLS only, on a CA and certificates made for their run (mqtt/tls.py, `broker.tls`); mutual TLS
refuses clients without a certificate signed by that CA. An external broker's TLS comes from the
user's files. The harness's own clients (capture, commands, probes) go through `broker.client()`,
which sets up TLS (and under mutual TLS presents a certificate of the harness's).

The embedded amqtt 0.12 broker is used through its public API (an auth plugin, its
external-listener entry point, its sessions/subscriptions/retained_messages), and patched where
no public hook reaches one of its known faults (see _PatchedAmqtt): sessions are not
marked anonymous so persistent sessions survive reconnects; a client silent for 1.5x its
keepalive is dropped so its last will fires; the QoS delivered is min(publish QoS, subscription
QoS) instead of the subscriber's QoS; messages published just before a DISCONNECT are routed
instead of dropped. Capture on amqtt records each message where it enters routing, inside the
patch the QoS fix needs anyway: amqtt's MESSAGE_BROADCAST event would do too, but amqtt runs each
event handler as a new task, a loop iteration later, which added 65 us to every recorded arrival
(bench_mqtt latency p50 0.20 -> 0.27 ms), and it is not fired for wills. On mosquitto and
external brokers capture subscribes to '#' with an MQTT 5 client (retain-as-published, so
retain flags match amqtt's capture).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import hmac
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker as _Amqtt
from amqtt.broker import RetainedApplicationMessage
from amqtt.errors import BrokerError as _AmqttBrokerError
from amqtt.events import BrokerEvents
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from ..errors import BrokerError, MqttError
from ..secret import Secret, reveal
from ..tempdirs import make_temp_dir, remove as remove_temp_dir
from .client import MqttClient
from .listener import Listener
from ..tether import Tether
from .tls import MODES as TLS_MODES, BrokerTls, GeneratedTls, ProvidedTls
from .topics import topic_matches

__all__ = ["Broker", "AmqttBroker", "MosquittoBroker", "ExternalBroker", "BrokerError", "MqttClient",
           "MqttError", "make_broker", "Listener"]


def _lan_address() -> str:
    """The address other machines reach us on (the interface of the default route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent, the kernel only picks a route
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_listening(host: str, port: int, timeout: float, alive: Callable[[], bool]) -> bool:
    # Polled: nothing announces that another process has started listening.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.003)
    return False


@dataclass
class Broker:
    """Where a broker listens and how to log in; subclasses know how to run it."""

    host: str = "127.0.0.1"
    port: int = 0
    lan: bool = False
    credentials: tuple[str, str] | None = None
    tls_mode: str | None = None     # None (plain MQTT), "server" or "mutual"
    tls: BrokerTls | None = None    # the CA and certificates: made at start, or given
    _listeners: list[Listener] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _made_tls: bool = field(default=False, repr=False)  # made at start, so removed at stop

    kind = "broker"

    def __post_init__(self) -> None:
        if self.tls_mode not in (None, *TLS_MODES):
            raise BrokerError(f"{self.kind} broker: tls_mode {self.tls_mode!r}: use one of {', '.join(TLS_MODES)} or None")
        if self.tls is not None:
            if self.tls_mode not in (None, self.tls.mode):
                raise BrokerError(f"{self.kind} broker: tls_mode {self.tls_mode!r} but the TLS given is {self.tls.mode}")
            self.tls_mode = self.tls.mode

    @property
    def url(self) -> str:
        """mqtt[s]://[user:***@]host:port: for messages and logs, so the password is masked."""
        auth = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        return f"{'mqtts' if self.tls_mode else 'mqtt'}://{auth}{self.host}:{self.port}"

    @property
    def bind_host(self) -> str:
        return "0.0.0.0" if self.lan else self.host

    def _prepare(self) -> None:
        """LAN brokers get generated credentials and the LAN address; never anonymous. A TLS
        broker gets a CA and a certificate for the addresses it is dialled on."""
        if self.lan:
            self.host = _lan_address()
            if self.credentials is None:
                self.credentials = ("hil-" + secrets.token_hex(4), Secret(secrets.token_urlsafe(18)))
        if self.tls is not None and not isinstance(self.tls, GeneratedTls):
            raise BrokerError(f"{self.kind} broker: serving TLS needs a CA of its own (tls_mode=..., or a "
                              f"GeneratedTls), not {type(self.tls).__name__}")
        if self.tls_mode and self.tls is None:
            self.tls = GeneratedTls([self.host], mutual=self.tls_mode == "mutual")
            self._made_tls = True

    def _forget_tls(self) -> None:
        """Remove the CA and certificates made at start (TLS material given is the giver's)."""
        if self._made_tls:
            self.tls.close()
            self.tls, self._made_tls = None, False

    def start(self) -> "Broker":
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self, keep_sessions: bool = True, downtime: float = 0.0) -> None:
        """Go down and come back on the same port; persistent sessions survive unless told not to."""
        raise BrokerError(f"{self.kind} broker at {self.host}:{self.port} cannot be restarted by the harness")

    def kick(self, client_id: str) -> None:
        """Drop one client's connection as a broker would drop a dead one (its last will fires)."""
        # Session take-over (MQTT 3.1.4-2): connect with the same id, keep its session, leave.
        with self.client(client_id=client_id, clean=False, protocol=4):
            pass

    def mute_pings(self, muted: bool = True) -> None:
        """Stop (or resume) answering PINGREQ, so clients see a hung broker."""
        raise BrokerError(f"{self.kind} broker at {self.host}:{self.port} cannot stop answering pings")

    def retained(self, topic_filter: str = "#", settle: float = 0.05) -> dict[str, tuple[bytes, int]]:
        """Retained messages matching a filter: {topic: (payload, qos)}, asked as a new subscriber."""
        found: dict[str, tuple[bytes, int]] = {}

        def keep(topic, payload, qos, retain, dup, client_id):
            if retain:
                found[topic] = (payload, qos)

        with self.client(on_message=keep) as probe:
            probe.subscribe(topic_filter, qos=2)
            probe.ping()
            time.sleep(settle)  # retained messages follow the SUBACK; give stragglers a moment
        return found

    def client(self, client_id: str | None = None, **kwargs) -> MqttClient:
        """A connected harness-side MQTT client (use as a context manager). On a TLS broker it
        verifies the broker and, under mutual TLS, presents the harness's own certificate;
        `tls=broker.tls.client_context(None)` makes one that presents none."""
        user, password = self.credentials or (None, None)
        if self.tls is not None and "tls" not in kwargs:
            kwargs["tls"] = self.tls.client_context(self.tls.client_cert("hil-harness") if self.tls.mutual else None)
        client = MqttClient(self.host, self.port, client_id or f"hil-{secrets.token_hex(4)}",
                            username=user, password=password, **kwargs)
        return client.connect()

    def add_listener(self, listener: Listener) -> None:
        """Call `listener` for every message the broker routes, from now on."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _emit(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool, client_id: str | None) -> None:
        for listener in self._listeners:
            listener(topic, bytes(payload), qos, retain, dup, client_id)

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()




# ----------------------------------------------------------------------------- amqtt


class HarnessAuthPlugin(BaseAuthPlugin):
    """Accepts every client on loopback, only the generated credentials otherwise.

    Fixes: amqtt's own AnonymousAuthPlugin marks each session it admits anonymous, and amqtt
    then forgets a disconnected anonymous session within a second (its session monitor) and
    queues nothing for it, so persistent (clean_session=0) sessions would lose their
    subscriptions and queued QoS 1/2 messages across reconnects. This plugin never marks a
    session anonymous. Guarded by tests/test_broker_amqtt_fixes.py::
    test_a_persistent_session_keeps_what_was_queued_while_it_was_away.
    """

    @dataclass
    class Config:
        username: str | None = None
        password: str | None = None

    async def authenticate(self, *, session: Session) -> bool:
        if self.config.username is None:
            return True
        password = session.password or ""
        password = password.decode() if isinstance(password, bytes) else password
        return session.username == self.config.username and hmac.compare_digest(password, self.config.password)


class _ConnectionWriter(StreamWriterAdapter):
    """amqtt's writer for one client connection, which the harness can also cut as a dead link
    would be cut, and wait out."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        super().__init__(writer)
        self.stream = writer
        self.task = asyncio.current_task()  # the connection's handling: done once amqtt let go of it

    def cut(self) -> None:
        self.stream.transport.abort()


# Per connection (its task's context): a one-item list holding the message its client loop is
# routing, so the routing step knows the QoS it was published with.
_DELIVERING: contextvars.ContextVar[list] = contextvars.ContextVar("hil_delivering")


class _PatchedAmqtt(_Amqtt):
    """amqtt's broker behind a listening socket of the harness's own, with the harness's fixes.

    amqtt binds nothing itself (an "external" listener): `listen` owns the socket and hands each
    connection to amqtt's public `external_connected`, which lets restart close and reopen it.
    Five private amqtt names remain, each where no public hook reaches an amqtt fault:
      _initialize_client_session  the one point where a connection's handler and session are
                                  both known before its reader starts: keepalive enforcement,
                                  the DISCONNECT drain, muted pings, noting each publish's QoS
      _broadcast_message          where every message (wills too) enters routing: carries its
                                  publish QoS to the routing loop; capture records it here
      _run_broadcast, _broadcast_queue   the routing loop, for the QoS downgrade
      _publish_retained_messages_for_subscription   at every CONNECT amqtt 0.12 calls it for every
                                  filter ANY client holds, so a client got others' retained
                                  messages (a relay's retained state reaching a weather station
                                  that subscribed to nothing); here only the session's own filters
    """

    def __init__(self, config: dict, owner: "AmqttBroker") -> None:
        super().__init__(config)
        self.owner = owner
        self.server: asyncio.Server | None = None
        # TLS is the listening socket's: amqtt reads and writes the decrypted streams.
        self.tls_context = owner.tls.server_context() if isinstance(owner.tls, GeneratedTls) else None

    # -- the listening socket
    async def listen(self, host: str, port: int) -> int:
        """Accept clients on host:port (0: a free one) and hand them to amqtt; the port."""
        self.server = await asyncio.start_server(self.accept, host, port, reuse_address=True, ssl=self.tls_context,
                                                 ssl_handshake_timeout=5 if self.tls_context else None)
        return self.server.sockets[0].getsockname()[1]

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.external_connected(StreamReaderAdapter(reader), _ConnectionWriter(writer), "default")

    async def _publish_retained_messages_for_subscription(self, subscription, session) -> None:
        # A filter brings retained messages only to a session that holds it (see the class doc).
        holders = self.subscriptions.get(subscription[0], [])
        if any(holder is session for holder, _ in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)

    @staticmethod
    def cut(handler) -> None:
        """Drop a client's connection abruptly, as a dead link would (its will fires)."""
        if isinstance(handler.writer, _ConnectionWriter):
            handler.writer.cut()

    # -- per connection
    async def _initialize_client_session(self, reader, writer, remote_address, remote_port):
        handler, session = await super()._initialize_client_session(reader, writer, remote_address, remote_port)

        # Fix, no keepalive enforcement: amqtt's reader waits keep_alive seconds for each packet,
        # then calls handle_read_timeout(), a no-op, and waits again, so a dead client is never
        # dropped and its will never fires. Allow 1.5x keepalive (MQTT-3.1.2-24), then cut the
        # connection. Guarded by tests/test_broker_amqtt_fixes.py::
        # test_a_silent_client_is_dropped_after_one_and_a_half_keepalives.
        if session.keep_alive > 0:
            session.keep_alive = session.keep_alive * 1.5
        handler.handle_read_timeout = lambda: self.cut(handler)

        # Fault injection, not a fix: mute_pings() makes the broker look hung to its clients.
        # Guarded by tests/test_broker.py::test_muted_pings_look_like_a_hung_broker[amqtt].
        answer_ping = handler.handle_pingreq

        async def maybe_answer_ping(packet):
            if not self.owner.pings_muted:
                await answer_ping(packet)

        handler.handle_pingreq = maybe_answer_ping

        # Fix, publishes lost behind a DISCONNECT: amqtt ends the client loop on DISCONNECT and
        # drops the publishes still queued behind it (a QoS 0 burst then a disconnect loses
        # most of it). Report the DISCONNECT only once the messages read before it have been
        # taken for routing. Guarded by tests/test_broker_amqtt_fixes.py::
        # test_a_burst_published_just_before_disconnect_is_routed_whole.
        wait_disconnect = handler.wait_disconnect

        async def wait_disconnect_after_deliveries():
            result = await wait_disconnect()
            # Polled: nothing announces the queue running empty (amqtt never calls task_done(),
            # and its clear_queues() empties it without a call we could hook).
            while not session.delivered_message_queue.empty():
                await asyncio.sleep(0.002)
            return result

        handler.wait_disconnect = wait_disconnect_after_deliveries

        # Part of the QoS fix (see _broadcast_message): note the message this connection's
        # client loop takes for routing.
        delivering: list = [None]
        _DELIVERING.set(delivering)
        deliver_next = handler.mqtt_deliver_next_message

        async def deliver_next_noted():
            delivering[0] = await deliver_next()
            return delivering[0]

        handler.mqtt_deliver_next_message = deliver_next_noted
        return handler, session

    # -- routing
    async def _broadcast_message(self, session, topic, data, force_qos=None):
        # Every message amqtt routes passes here, the client's publishes and the wills it sends
        # for dead clients alike: capture records it here, then its QoS rides along to the
        # routing loop as the broadcast's "qos" (the QoS fix, see _run_broadcast).
        message = None
        if force_qos is None and session is not None:
            delivering = _DELIVERING.get(None)
            if delivering and delivering[0] is not None and delivering[0].data is data:
                message = delivering[0]
        if message is not None:  # a client's publish
            packet = message.publish_packet
            qos, retain, dup = message.qos or 0, bool(packet and packet.retain_flag), bool(packet and packet.dup_flag)
        else:  # a last will (force_qos is its QoS), or a broker-internal message (no session)
            qos, dup = force_qos or 0, False
            retain = bool(session is not None and force_qos is not None and session.will_retain)
        self.owner._emit(topic, data or b"", qos, retain, dup, session.client_id if session is not None else None)
        await super()._broadcast_message(session, topic, data, qos)

    async def _run_broadcast(self, running_tasks) -> None:
        # Fix, QoS upgrade: amqtt delivers each message at the subscription's QoS, or at a forced
        # QoS to every subscriber, so a QoS 0 publish reaches a QoS 1 subscriber as QoS 1. This
        # routing loop delivers min(publish QoS, subscription QoS) (MQTT-3.8.4-6). Guarded by
        # tests/test_broker_amqtt_fixes.py::test_the_delivered_qos_is_the_lower_of_publish_and_subscription.
        broadcast = await self._broadcast_queue.get()
        topic, data = broadcast["topic"], broadcast["data"]
        for topic_filter, subscriptions in list(self.subscriptions.items()):
            if not topic_matches(topic_filter, topic):
                continue
            for target, sub_qos in list(subscriptions):
                qos = min(broadcast.get("qos", sub_qos), sub_qos)
                if target.transitions.state != "connected":
                    if not target.clean_session and qos > 0:
                        await self.hold_for(target, broadcast, qos)
                    continue
                handler = self.sessions.get(target.client_id, (None, None))[1] if target.client_id else None
                if handler:
                    running_tasks.append(asyncio.ensure_future(handler.mqtt_publish(topic, data, qos, retain=False)))

    async def hold_for(self, target: Session, broadcast: dict, qos: int) -> None:
        """Queue a message for an offline persistent session until it reconnects."""
        held = RetainedApplicationMessage(broadcast["session"], broadcast["topic"], broadcast["data"], qos)
        await target.retained_messages.put(held)
        await self.plugins_manager.fire_event(BrokerEvents.RETAINED_MESSAGE, client_id=target.client_id,
                                              retained_message=held)

    # -- faults
    async def reopen(self, keep_sessions: bool, downtime: float) -> None:
        """Close the listener and every connection (no wills: the broker died, not the client)."""
        self.server.close()
        dropped = []
        for session, handler in list(self.sessions.values()):
            session.will_flag = False
            if session.transitions.state == "connected":
                self.cut(handler)
                if isinstance(handler.writer, _ConnectionWriter) and handler.writer.task is not None:
                    dropped.append(handler.writer.task)
        if dropped:  # amqtt has let go of a connection once its task ends
            await asyncio.wait(dropped, timeout=5)
        if not keep_sessions:
            self.sessions.clear()
            self.subscriptions.clear()
            self.retained_messages.clear()
        await asyncio.sleep(downtime)
        await self.listen(self.owner.bind_host, self.owner.port)

    async def kick(self, client_id: str) -> bool:
        session, handler = self.sessions.get(client_id, (None, None))
        if session is None or session.transitions.state != "connected":
            return False
        self.cut(handler)
        return True

    async def close(self) -> None:
        """Stop accepting clients, then shut amqtt down."""
        if self.server is not None:
            self.server.close()
        await self.shutdown()


@dataclass
class AmqttBroker(Broker):
    """amqtt embedded in its own thread and event loop, on a free port unless told otherwise."""

    kind = "amqtt"
    pings_muted: bool = False
    start_timeout: float = 5.0
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _amqtt: _PatchedAmqtt | None = field(default=None, repr=False)

    def _config(self) -> dict:
        user, password = self.credentials or (None, None)
        return {
            # "external": amqtt binds no socket (_PatchedAmqtt.listen does); it skips a listener
            # without a "bind", which it does not use for this type.
            "listeners": {"default": {"type": "external", "bind": f"{self.bind_host}:{self.port}"}},
            "plugins": {f"{__name__}.HarnessAuthPlugin": {"username": user, "password": password}},
        }

    def _call(self, coro, timeout: float):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> "AmqttBroker":
        if self._thread is not None:
            return self
        self._prepare()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hil-amqtt", daemon=True)
        self._thread.start()

        async def boot() -> int:
            self._amqtt = _PatchedAmqtt(self._config(), self)
            await self._amqtt.start()
            try:
                return await self._amqtt.listen(self.bind_host, self.port)
            except OSError:
                await self._amqtt.shutdown()
                raise

        try:
            self.port = self._call(boot(), self.start_timeout)
        except (OSError, _AmqttBrokerError) as exc:
            self._close_loop()
            self._forget_tls()
            if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
                raise BrokerError(f"amqtt: port {self.port} on {self.bind_host} is already in use; "
                                  f"pass port=0 for a free one") from None
            raise BrokerError(f"amqtt could not start on {self.bind_host}:{self.port}: {exc}") from None
        return self

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
        self._thread = self._loop = self._amqtt = None

    def stop(self) -> None:
        if self._thread is None:
            return
        try:
            self._call(self._amqtt.close(), 10)
        finally:
            # amqtt leaves some per-connection tasks behind; cancel them before the loop closes.
            async def cancel_rest():
                rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in rest:
                    task.cancel()
                await asyncio.gather(*rest, return_exceptions=True)

            try:
                self._call(cancel_rest(), 5)
            finally:
                self._close_loop()
                self._forget_tls()

    def restart(self, keep_sessions: bool = True, downtime: float = 0.0) -> None:
        self._call(self._amqtt.reopen(keep_sessions, downtime), downtime + 10)

    def kick(self, client_id: str) -> None:
        if not self._call(self._amqtt.kick(client_id), 5):
            raise BrokerError(f"amqtt: no client {client_id!r} is connected, so none can be kicked")

    def mute_pings(self, muted: bool = True) -> None:
        self.pings_muted = muted

    def retained(self, topic_filter: str = "#", settle: float = 0.0) -> dict[str, tuple[bytes, int]]:
        messages = dict(self._amqtt.retained_messages)
        return {t: (bytes(m.data), m.qos or 0) for t, m in messages.items() if topic_matches(topic_filter, t)}


# ----------------------------------------------------------------------------- subscriber capture


@dataclass
class _SubscribingBroker(Broker):
    """A broker we cannot hook into: capture subscribes to '#' (MQTT 5, retain as published)."""

    _capture: MqttClient | None = field(default=None, repr=False)

    def add_listener(self, listener: Listener) -> None:
        super().add_listener(listener)
        if self._capture is None:
            self._start_capture()

    def _start_capture(self) -> None:
        self._capture = self.client(client_id=f"hil-capture-{secrets.token_hex(3)}", protocol=5,
                                    on_message=self._emit)
        self._capture.subscribe("#", qos=2, retain_as_published=True)

    def _stop_capture(self) -> None:
        if self._capture is not None:
            self._capture.close()
            self._capture = None


@dataclass
class MosquittoBroker(_SubscribingBroker):
    """Debian's mosquitto on a free port with a generated config, run and stopped by pid.

    mosquitto dies with the process that started it, even a SIGKILLed one (its parent-death
    signal, see micropython_hil/tether.py); its folder (config, log, saved sessions) is removed on every stop,
    and what a killed run left is removed by the next session (tempdirs.remove_stale).
    """

    kind = "mosquitto"
    executable: str = "mosquitto"
    start_timeout: float = 5.0
    _dir: Path | None = field(default=None, repr=False)
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _tether: Tether | None = field(default=None, repr=False)

    @staticmethod
    def available(executable: str = "mosquitto") -> str | None:
        """None when mosquitto can run here, else the reason it cannot (for pytest.skip)."""
        if shutil.which(executable) or Path("/usr/sbin", executable).exists():
            return None
        return f"{executable} is not installed (apt-get install mosquitto)"

    @property
    def pid(self) -> int | None:
        """The running mosquitto's process id (None when it is not running)."""
        return self._proc.pid if self._proc is not None else None

    def _write_config(self) -> Path:
        lines = [
            # Run as root, mosquitto switches to user "mosquitto", which cannot use our temp folder.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"listener {self.port} {self.bind_host}",
            f"allow_anonymous {'false' if self.credentials else 'true'}",
            "persistence true", f"persistence_location {self._dir}/",
            f"log_dest file {self._dir}/mosquitto.log", "log_type error", "log_type warning",
            "set_tcp_nodelay true", "max_queued_messages 100000", "max_inflight_messages 0",
        ]
        if self.tls is not None:  # on the listener above: TLS only, no plain MQTT beside it
            lines += [f"cafile {self.tls.ca_file}", f"certfile {self.tls.server_cert_file}",
                      f"keyfile {self.tls.server_key_file}",
                      f"require_certificate {'true' if self.tls.mutual else 'false'}"]
        if self.credentials:
            pwfile = self._dir / "passwd"
            pwfile.write_text(f"{self.credentials[0]}:{reveal(self.credentials[1])}\n")
            subprocess.run(["mosquitto_passwd", "-U", str(pwfile)], check=True, capture_output=True)
            lines.append(f"password_file {pwfile}")
        conf = self._dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> "MosquittoBroker":
        if self._proc is not None:
            return self
        reason = self.available(self.executable)
        if reason:
            raise BrokerError(f"--broker mosquitto: {reason}")
        wanted = self.port
        if wanted:
            try:  # mosquitto would not say; and our probe could reach whoever holds the port
                with socket.socket() as probe:
                    probe.bind((self.bind_host, wanted))
            except OSError:
                raise BrokerError(f"mosquitto: port {wanted} on {self.bind_host} is already in use; "
                                  f"pass port=0 for a free one") from None
        self._dir = make_temp_dir("mosquitto")
        # mosquitto is forked by this broker's own thread, which lives until stop(): mosquitto's
        # parent-death signal fires when the forking thread ends, and the caller's may not last.
        self._tether = Tether(name="hil-mosquitto-launcher")
        try:
            self._prepare()  # in here: a CA made for TLS is removed by stop() if the start fails
            for _attempt in range(3):  # a free port can be taken between probing and binding
                self.port = wanted or _free_port(self.bind_host)
                if self._launch():
                    return self
                if wanted:
                    break
            raise BrokerError(f"mosquitto could not listen on {self.bind_host}:{self.port} ({self._last_log_line()}); "
                              f"is the port already in use? pass port=0 for a free one")
        except BaseException:
            self.stop()
            raise

    def _last_log_line(self) -> str:
        logfile = self._dir / "mosquitto.log"
        lines = logfile.read_text(errors="replace").strip().splitlines() if logfile.exists() else []
        return lines[-1] if lines else "no log"

    def _launch(self) -> bool:
        exe = shutil.which(self.executable) or str(Path("/usr/sbin", self.executable))
        self._proc = self._tether.popen([exe, "-c", str(self._write_config())], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe_host = "127.0.0.1" if self.lan else self.host
        if _wait_listening(probe_host, self.port, self.start_timeout, lambda: self._proc.poll() is None):
            return True
        self._terminate()
        return False

    def _terminate(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it may end on its own meanwhile
                os.kill(self._proc.pid, signal.SIGCONT)  # a muted (stopped) broker cannot handle SIGTERM
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def _cleanup_dir(self) -> None:
        if self._dir is not None:
            remove_temp_dir(self._dir)
            self._dir = None

    def _close_tether(self) -> None:
        if self._tether is not None:
            self._tether.close()
            self._tether = None

    def stop(self) -> None:
        """Stop capture and mosquitto, then remove its folder: each step runs even if an
        earlier one failed (the launcher thread goes last, as mosquitto dies with it)."""
        with contextlib.ExitStack() as steps:  # callbacks run last-registered first
            steps.callback(self._close_tether)
            steps.callback(self._forget_tls)
            steps.callback(self._cleanup_dir)
            steps.callback(self._terminate)
            self._stop_capture()

    def restart(self, keep_sessions: bool = True, downtime: float = 0.0) -> None:
        capturing = self._capture is not None
        self._stop_capture()
        self._terminate()  # SIGTERM: mosquitto saves its sessions to mosquitto.db
        if not keep_sessions:
            (self._dir / "mosquitto.db").unlink(missing_ok=True)
        time.sleep(downtime)
        if not self._launch():
            raise BrokerError(f"mosquitto did not come back on {self.bind_host}:{self.port} after a restart")
        if capturing:
            self._start_capture()

    def mute_pings(self, muted: bool = True) -> None:
        """mosquitto cannot ignore only pings: the whole process is frozen (SIGSTOP) instead."""
        os.kill(self._proc.pid, signal.SIGSTOP if muted else signal.SIGCONT)


@dataclass
class ExternalBroker(_SubscribingBroker):
    """A broker someone else runs, given as [USER:PASSWORD@]HOST:PORT; its TLS (`tls`, a
    ProvidedTls) from the user's CA and client certificate files."""

    kind = "external"

    def start(self) -> "ExternalBroker":
        try:
            probe = socket.create_connection((self.host, self.port), timeout=5)
        except OSError as exc:
            raise BrokerError(f"external broker {self.host}:{self.port} is unreachable ({exc.strerror or exc}); "
                              f"check --broker HOST:PORT") from None
        with probe:
            if self.tls is not None:  # a wrong CA or a plain port shows here, before any test
                try:
                    # With the client certificate: a TLS 1.2 broker refuses a handshake without it.
                    cert = self.tls.client_cert() if self.tls.mutual else None
                    self.tls.client_context(cert).wrap_socket(probe, server_hostname=self.host).close()
                except (ssl.SSLError, OSError) as exc:
                    why = exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError) else exc
                    raise BrokerError(f"external broker {self.host}:{self.port}: TLS handshake failed ({why}); "
                                      f"check --broker-ca and that the port speaks TLS") from None
        return self

    def stop(self) -> None:
        self._stop_capture()


def make_broker(spec: str = "amqtt", lan: bool = False, tls: str | None = None, ca: str | Path | None = None,
                cert: str | Path | None = None, key: str | Path | None = None, port: int = 0) -> Broker:
    """A broker from a --broker value: 'amqtt', 'mosquitto' or '[USER:PASSWORD@]HOST:PORT'.

    `tls` (--broker-tls): None, "server" or "mutual". amqtt and mosquitto make their own CA; an
    external broker's comes from `ca` (--broker-ca) and, for mutual TLS, `cert` and `key`
    (--broker-cert, --broker-key), PEM files. `port` (--broker-port): amqtt's or mosquitto's fixed
    port, where a tool outside the test (mosquitto_sub, a bench board's config) must find it."""
    if tls not in (None, *TLS_MODES):
        raise BrokerError(f"--broker-tls {tls!r}: use one of {', '.join(TLS_MODES)}")
    if spec in ("amqtt", "mosquitto"):
        given = [option for option, value in (("--broker-ca", ca), ("--broker-cert", cert), ("--broker-key", key)) if value]
        if given:
            raise BrokerError(f"{given[0]} is for an external --broker HOST:PORT; {spec} makes a CA and "
                              f"certificates of its own (--broker-tls server|mutual)")
        return (AmqttBroker if spec == "amqtt" else MosquittoBroker)(lan=lan, tls_mode=tls, port=port)
    creds, _, address = spec.rpartition("@")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BrokerError(f"--broker {spec!r}: expected amqtt, mosquitto or [USER:PASSWORD@]HOST:PORT")
    user, _, password = creds.partition(":")
    credentials = (user, Secret(password)) if ":" in creds else None
    provided = None
    if tls is None and (ca or cert or key):
        raise BrokerError("--broker-ca, --broker-cert and --broker-key need --broker-tls server (or mutual)")
    if tls is not None:
        if not ca:
            raise BrokerError(f"--broker-tls with an external broker needs --broker-ca FILE: the CA certificate "
                              f"(PEM) that signed {host}'s certificate, which boards verify it against")
        if (tls == "mutual") != bool(cert or key):
            raise BrokerError("--broker-tls mutual needs --broker-cert and --broker-key (the client certificate the "
                              "broker accepts); --broker-tls server takes neither")
        provided = ProvidedTls(ca, cert, key)
    return ExternalBroker(host=host.strip("[]"), port=int(port), credentials=credentials, tls_mode=tls, tls=provided)
