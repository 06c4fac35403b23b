"""The MQTT broker a board talks to: embedded amqtt, Debian's mosquitto, or an external one.

One `Broker` interface over the three kinds (.host, .port, .url, .credentials, start/stop/restart,
context manager) plus what tests need from a broker: capture of every routed message
(`add_listener`), retained state (`retained`), and faults (`restart`, `kick`, `mute_pings`).

The embedded amqtt 0.12 broker is patched for its known faults (see DESIGN.md): sessions are not
marked anonymous so persistent sessions survive reconnects; a client silent for 1.5x its
keepalive is dropped so its last will fires; the QoS delivered is min(publish QoS, subscription
QoS) instead of the subscriber's QoS; messages published just before a DISCONNECT are routed
instead of dropped. On mosquitto and external brokers capture subscribes to
'#' with an MQTT 5 client (retain-as-published, so retain flags match amqtt's capture).
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from amqtt.broker import Broker as _Amqtt
from amqtt.errors import BrokerError as _AmqttBrokerError
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from ..errors import BrokerError
from .client import MqttClient
from ..errors import MqttError

__all__ = ["Broker", "AmqttBroker", "MosquittoBroker", "ExternalBroker", "BrokerError", "MqttClient",
           "MqttError", "make_broker", "Listener"]


class Listener(Protocol):
    """Called from the broker's thread for every routed message; must be quick and not raise."""

    def __call__(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool,
                 client_id: str | None) -> None: ...


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
    _listeners: list[Listener] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    kind = "broker"

    @property
    def url(self) -> str:
        auth = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        return f"mqtt://{auth}{self.host}:{self.port}"

    @property
    def bind_host(self) -> str:
        return "0.0.0.0" if self.lan else self.host

    def _prepare(self) -> None:
        """LAN brokers get generated credentials and the LAN address; never anonymous."""
        if self.lan:
            self.host = _lan_address()
            if self.credentials is None:
                self.credentials = ("hil-" + secrets.token_hex(4), secrets.token_urlsafe(18))

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
        """A connected harness-side MQTT client (use as a context manager)."""
        user, password = self.credentials or (None, None)
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

    Unlike amqtt's anonymous plugin it never marks a session anonymous, so persistent
    (clean_session=0) sessions keep subscriptions and queued QoS 1/2 messages across reconnects.
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


_PUBLISHED = contextvars.ContextVar("hil_published", default=None)  # the app message being routed


class _PatchedAmqtt(_Amqtt):
    """amqtt's broker with the harness's fixes and hooks (overrides of its 0.12 internals)."""

    def __init__(self, config: dict, owner: "AmqttBroker") -> None:
        super().__init__(config)
        self.owner = owner

    async def _initialize_client_session(self, reader, writer, remote_address, remote_port):
        handler, session = await super()._initialize_client_session(reader, writer, remote_address, remote_port)
        if session.keep_alive > 0:
            # amqtt never enforces keepalive; its reader waits keep_alive seconds per packet then
            # calls handle_read_timeout(), which we make close the connection (will fires).
            session.keep_alive = session.keep_alive * 1.5
        handler.handle_read_timeout = lambda: self._drop(handler)
        answer_ping = handler.handle_pingreq

        async def maybe_answer_ping(packet):
            if not self.owner.pings_muted:
                await answer_ping(packet)

        handler.handle_pingreq = maybe_answer_ping
        wait_disconnect = handler.wait_disconnect

        async def wait_disconnect_after_deliveries():
            # amqtt ends the client loop on DISCONNECT and drops publishes still queued behind it
            # (a QoS 0 burst then disconnect loses most of it): report the DISCONNECT only once
            # the messages read before it have been routed.
            result = await wait_disconnect()
            while not session.delivered_message_queue.empty():
                await asyncio.sleep(0.002)
            return result

        handler.wait_disconnect = wait_disconnect_after_deliveries
        return handler, session

    @staticmethod
    def _drop(handler) -> None:
        writer = getattr(handler.writer, "_writer", None)
        if writer is not None:
            writer.transport.abort()

    async def _handle_message_delivery(self, client_session, handler, wait_deliver):
        _PUBLISHED.set(wait_deliver.result())
        return await super()._handle_message_delivery(client_session, handler, wait_deliver)

    async def _broadcast_message(self, session, topic, data, force_qos=None):
        message = _PUBLISHED.get()
        if force_qos is not None or message is None or session is None:
            # a will (force_qos), or a broker-internal message
            retain = bool(session and force_qos is not None and session.will_retain)
            qos = force_qos if force_qos is not None else 0
            dup = False
        else:
            packet = message.publish_packet
            qos, retain, dup = message.qos or 0, bool(packet and packet.retain_flag), bool(packet and packet.dup_flag)
        self.owner._emit(topic, data or b"", qos, retain, dup, session.client_id if session else None)
        broadcast = {"session": session, "topic": topic, "data": data, "publish_qos": qos}
        await self._broadcast_queue.put(broadcast)

    async def _run_broadcast(self, running_tasks) -> None:
        # Our own routing loop: the delivered QoS is min(publish QoS, subscription QoS).
        broadcast = await self._broadcast_queue.get()
        topic, data = broadcast["topic"], broadcast["data"]
        for topic_filter, subscriptions in list(self._subscriptions.items()):
            if not self._matches(topic, topic_filter):
                continue
            for target, sub_qos in list(subscriptions):
                qos = min(broadcast.get("publish_qos", sub_qos), sub_qos)
                if target.transitions.state != "connected":
                    if not target.clean_session and qos > 0:
                        await self._retain_broadcast_message(broadcast, qos, target)
                    continue
                handler = self._get_handler(target)
                if handler:
                    running_tasks.append(asyncio.ensure_future(handler.mqtt_publish(topic, data, qos, retain=False)))

    async def reopen(self, keep_sessions: bool, downtime: float) -> None:
        """Close the listener and every connection (no wills: the broker died, not the client)."""
        server = self._servers["default"]
        server.instance.close()
        for session, handler in list(self._sessions.values()):
            session.will_flag = False
            if session.transitions.state == "connected":
                self._drop(handler)
        await asyncio.sleep(0.01)  # let the handlers see their connections close
        if not keep_sessions:
            self._sessions.clear()
            self._subscriptions.clear()
            self._retained_messages.clear()
        await asyncio.sleep(downtime)
        listener = self.listeners_config["default"]
        address, _port = self._split_bindaddr_port(listener["bind"], 1883)
        server.instance = await self._create_server_instance("default", listener.type, address, self.owner.port, None)

    async def kick(self, client_id: str) -> bool:
        session, handler = self._sessions.get(client_id, (None, None))
        if session is None or session.transitions.state != "connected":
            return False
        self._drop(handler)
        return True


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
            "listeners": {"default": {"type": "tcp", "bind": f"{self.bind_host}:{self.port}"}},
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

        async def boot():
            self._amqtt = _PatchedAmqtt(self._config(), self)
            await self._amqtt.start()
            return self._amqtt._servers["default"].instance.sockets[0].getsockname()[1]

        try:
            self.port = self._call(boot(), self.start_timeout)
        except _AmqttBrokerError as exc:
            self._close_loop()
            if "address already in use" in str(exc).lower():
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
            self._call(self._amqtt.shutdown(), 10)
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

    def restart(self, keep_sessions: bool = True, downtime: float = 0.0) -> None:
        self._call(self._amqtt.reopen(keep_sessions, downtime), downtime + 10)

    def kick(self, client_id: str) -> None:
        if not self._call(self._amqtt.kick(client_id), 5):
            raise BrokerError(f"amqtt: no client {client_id!r} is connected, so none can be kicked")

    def mute_pings(self, muted: bool = True) -> None:
        self.pings_muted = muted

    def retained(self, topic_filter: str = "#", settle: float = 0.0) -> dict[str, tuple[bytes, int]]:
        messages = dict(self._amqtt.retained_messages)
        return {t: (bytes(m.data), m.qos or 0) for t, m in messages.items() if self._amqtt._matches(t, topic_filter)}


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
    """Debian's mosquitto on a free port with a generated config, run and stopped by pid."""

    kind = "mosquitto"
    executable: str = "mosquitto"
    start_timeout: float = 5.0
    _dir: Path | None = field(default=None, repr=False)
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @staticmethod
    def available(executable: str = "mosquitto") -> str | None:
        """None when mosquitto can run here, else the reason it cannot (for pytest.skip)."""
        if shutil.which(executable) or Path("/usr/sbin", executable).exists():
            return None
        return f"{executable} is not installed (apt-get install mosquitto)"

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
        if self.credentials:
            pwfile = self._dir / "passwd"
            pwfile.write_text(f"{self.credentials[0]}:{self.credentials[1]}\n")
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
        self._prepare()
        wanted = self.port
        if wanted:
            try:  # mosquitto would not say; and our probe could reach whoever holds the port
                with socket.socket() as probe:
                    probe.bind((self.bind_host, wanted))
            except OSError:
                raise BrokerError(f"mosquitto: port {wanted} on {self.bind_host} is already in use; "
                                  f"pass port=0 for a free one") from None
        self._dir = Path(tempfile.mkdtemp(prefix="hil-mosquitto-"))
        for _attempt in range(3):  # a free port can be taken between probing and binding
            self.port = wanted or _free_port(self.bind_host)
            if self._launch():
                return self
            if wanted:
                break
        logfile = self._dir / "mosquitto.log"
        log = (logfile.read_text(errors="replace").strip().splitlines()[-1:] if logfile.exists() else []) or ["no log"]
        self._cleanup_dir()
        raise BrokerError(f"mosquitto could not listen on {self.bind_host}:{self.port} ({log[0]}); "
                          f"is the port already in use? pass port=0 for a free one")

    def _launch(self) -> bool:
        exe = shutil.which(self.executable) or str(Path("/usr/sbin", self.executable))
        self._proc = subprocess.Popen([exe, "-c", str(self._write_config())], stdin=subprocess.DEVNULL,
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
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def stop(self) -> None:
        self._stop_capture()
        self._terminate()
        self._cleanup_dir()

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
    """A broker someone else runs, given as [USER:PASSWORD@]HOST:PORT."""

    kind = "external"

    def start(self) -> "ExternalBroker":
        try:
            socket.create_connection((self.host, self.port), timeout=5).close()
        except OSError as exc:
            raise BrokerError(f"external broker {self.host}:{self.port} is unreachable ({exc.strerror or exc}); "
                              f"check --broker HOST:PORT") from None
        return self

    def stop(self) -> None:
        self._stop_capture()


def make_broker(spec: str = "amqtt", lan: bool = False) -> Broker:
    """A broker from a --broker value: 'amqtt', 'mosquitto' or '[USER:PASSWORD@]HOST:PORT'."""
    if spec == "amqtt":
        return AmqttBroker(lan=lan)
    if spec == "mosquitto":
        return MosquittoBroker(lan=lan)
    creds, _, address = spec.rpartition("@")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BrokerError(f"--broker {spec!r}: expected amqtt, mosquitto or [USER:PASSWORD@]HOST:PORT")
    credentials = tuple(creds.split(":", 1)) if ":" in creds else None
    return ExternalBroker(host=host.strip("[]"), port=int(port), credentials=credentials)
