"""A broker image run in a container on a Docker engine (`--broker docker:IMAGE[:TAG]`).

`DockerBroker` is an ExternalBroker whose broker the harness starts: the container is created on
the engine DOCKER_HOST names (or `engine_url`), the test's files (the broker's config, its
password file, certificates) are copied in before it starts, its MQTT port is published on
loopback (on every interface of a remote engine, reached at the engine's host), and it counts as
started once it answers an MQTT CONNECT. Capture subscribes to '#' as for any external broker.
`stop()` removes the container; a container a killed run left is removed by the next start on
that engine (containers/ownership.py), never one that is not the harness's.

`docker:micropython-hil/mosquitto` (no tag) is Debian's mosquitto of this machine, imported as an
image on first use (containers/images.py); any other image is used as it is, pulled if missing.
Faults: `restart` (stop and start; sessions survive where the image's config saves them, as the
local mosquitto image's does), `kick`, and `mute_pings`, which freezes the container (docker pause).
"""

from __future__ import annotations

import contextlib
import io
import secrets
import socket
import struct
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from ..containers.engine import Engine
from ..containers.images import MOSQUITTO_PORT, MOSQUITTO_REPOSITORY, mosquitto_image
from ..containers.ownership import run_labels
from ..errors import BrokerError, HarnessError
from ..secret import reveal
from .broker import ExternalBroker
from .listener import Listener

SPEC_PREFIX = "docker:"

# A file copied into the container: a host file, or its text or bytes.
FileContent = Union[Path, str, bytes]


def _free_local_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files_tar(files: Mapping[str, FileContent]) -> bytes:
    """The files as one tar rooted at / (docker makes missing parent folders)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, content in files.items():
            if not str(path).startswith("/"):
                raise BrokerError(f"docker broker file {path!r}: give the absolute path inside the container")
            if isinstance(content, Path):
                try:
                    data = content.read_bytes()
                except OSError as exc:
                    raise BrokerError(f"docker broker file {content}: {exc.strerror or exc}") from None
            else:
                data = content.encode() if isinstance(content, str) else bytes(content)
            info = tarfile.TarInfo(str(path).lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


@dataclass
class DockerBroker(ExternalBroker):
    """A broker image in a container, started and removed by the harness; host and port are
    where its published MQTT port is reached from here."""

    kind = "docker"
    image: str = MOSQUITTO_REPOSITORY
    files: Mapping[str, FileContent] = field(default_factory=dict, repr=False)  # container path -> content
    container_port: int = MOSQUITTO_PORT     # the MQTT port inside the container
    engine_url: str | None = None            # None: DOCKER_HOST, else the local socket
    command: Sequence[str] | None = None     # None: the image's own
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    start_timeout: float = 30.0
    _engine: Engine | None = field(default=None, repr=False)
    _container: Any = field(default=None, repr=False)
    _reference: str = field(default="", repr=False)
    _own_listeners: list = field(default_factory=list, repr=False)

    # -- what it is
    @property
    def name(self) -> str | None:
        """The container's name (None when not started)."""
        return self._container.name if self._container is not None else None

    @property
    def engine(self) -> Engine | None:
        return self._engine

    def _label(self) -> str:
        return f"docker broker {self._reference or self.image}"

    def logs(self, tail: int = 20) -> str:
        """The container's last output lines (its log)."""
        if self._container is None:
            return ""
        try:
            return self._container.logs(tail=tail).decode(errors="replace")
        except self._engine.errors.APIError:
            return ""

    def _last_log_line(self) -> str:
        lines = self.logs().strip().splitlines()
        return lines[-1] if lines else "no output"

    # -- lifecycle
    def start(self) -> "DockerBroker":
        if self._container is not None:
            return self
        if self.lan:
            raise BrokerError(f"docker broker {self.image}: --broker-lan is not supported yet; publish the "
                              f"port yourself and use --broker HOST:PORT")
        if self.tls_mode and self.tls is None:
            raise BrokerError(f"docker broker {self.image}: its TLS comes from your files: copy its certificates "
                              f"in (files=) and give the CA that signed them (--broker-ca)")
        try:
            self._engine = Engine(self.engine_url)
        except HarnessError as exc:
            raise BrokerError(f"{self._label()}: {exc}") from None
        try:
            self._engine.remove_leftovers()
            self._reference = self._resolve_image()
            self.host = self._engine.host
            self._launch(self.port or None)
        except BaseException:
            self.stop()
            raise
        return self

    def _resolve_image(self) -> str:
        try:
            if self.image == MOSQUITTO_REPOSITORY:
                return mosquitto_image(self._engine)
            self._engine.ensure_image(self.image)
        except HarnessError as exc:
            raise BrokerError(f"--broker docker:{self.image}: {exc}") from None
        return self.image

    def _launch(self, port: int | None) -> None:
        """Create, fill and start the container on `port` (None: a free one) and wait until it
        answers MQTT; a port taken meanwhile on this machine is retried with another."""
        for attempt in range(3):
            wanted = port or (_free_local_port() if self._engine.local else None)
            try:
                self._create(wanted)
                self._container.start()
            except self._engine.errors.APIError as exc:
                why = exc.explanation or str(exc)
                self._remove_container()
                if port is None and attempt < 2 and ("already" in why or "in use" in why):
                    continue  # the free port was taken between probing and binding
                raise BrokerError(f"{self._label()}: docker engine {self._engine.url} could not start it "
                                  f"({why})") from None
            self._container.reload()
            published = self._container.ports.get(f"{self.container_port}/tcp") or []  # none once it exited
            self.port = int(published[0]["HostPort"]) if published else (wanted or 0)
            self._wait_answering()
            return

    def _create(self, port: int | None) -> None:
        self._container = self._engine.client.containers.create(
            self._reference, command=list(self.command) if self.command else None,
            name=f"hil-broker-{secrets.token_hex(4)}", labels=run_labels("broker"),
            environment=dict(self.environment), detach=True,
            ports={f"{self.container_port}/tcp": (self._engine.publish_address, port)})
        if self.files:
            self._container.put_archive("/", _files_tar(self.files))

    def _connack(self) -> int | None:
        """The CONNACK code of an MQTT 3.1.1 CONNECT with this broker's credentials, or None when
        nothing answered (not listening yet)."""
        flags, payload = 0x02, _utf8(f"hil-health-{secrets.token_hex(3)}")
        if self.credentials:
            flags |= 0xC0
            payload += _utf8(self.credentials[0]) + _utf8(reveal(self.credentials[1]))
        body = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", 10) + payload
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as raw:
                sock = raw
                if self.tls is not None:
                    context = self.tls.client_context(self.tls.client_cert("hil-harness") if self.tls.mutual else None)
                    sock = context.wrap_socket(raw, server_hostname=self.host)
                sock.sendall(bytes([0x10]) + _remaining_length(len(body)) + body)
                reply = b""
                while len(reply) < 4:
                    chunk = sock.recv(4 - len(reply))
                    if not chunk:
                        return None
                    reply += chunk
                with contextlib.suppress(OSError):
                    sock.sendall(b"\xe0\x00")  # DISCONNECT
        except OSError:  # refused, reset, timed out, TLS not up yet: not answering
            return None
        return reply[3] if reply[0] >> 4 == 2 else None

    def _wait_answering(self) -> None:
        """Until the broker answers an MQTT CONNECT: the docker proxy accepts connections on the
        published port before the broker listens, so a TCP connect proves nothing."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._connack()
            if code == 0:
                return
            if code is not None:
                who = "the credentials given" if self.credentials else "an anonymous client"
                raise BrokerError(f"{self._label()} refused {who} (CONNACK code {code}); check its config and "
                                  f"password file against the credentials (--broker-user, --broker-password)")
            self._container.reload()
            if self._container.status in ("exited", "dead"):
                code = self._container.attrs.get("State", {}).get("ExitCode")
                raise BrokerError(f"{self._label()} exited with code {code} before answering MQTT: "
                                  f"{self._last_log_line()}")
            if time.monotonic() > deadline:
                raise BrokerError(f"{self._label()} did not answer an MQTT CONNECT on {self.host}:{self.port} "
                                  f"within {self.start_timeout:g} s (last log line: {self._last_log_line()}); "
                                  f"is container_port {self.container_port} its MQTT port?")
            time.sleep(0.02)

    def _remove_container(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(self._engine.errors.NotFound):
                container.remove(force=True, v=True)

    def _close_engine(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def stop(self) -> None:
        """Stop capture, remove the container, close the engine: each step runs even if one fails."""
        with contextlib.ExitStack() as steps:  # callbacks run last-registered first
            steps.callback(self._close_engine)
            steps.callback(self._remove_container)
            super().stop()

    # -- capture survives restarts: the listeners are put back once the broker answers again
    def add_listener(self, listener: Listener) -> None:
        self._own_listeners.append(listener)
        super().add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._own_listeners:
            self._own_listeners.remove(listener)
        super().remove_listener(listener)

    def _resume_capture(self) -> None:
        for listener in list(self._own_listeners):
            super().remove_listener(listener)
            super().add_listener(listener)  # the first one re-subscribes to '#'

    # -- faults
    def restart(self, keep_sessions: bool = True, downtime: float = 0.0) -> None:
        """Stop the broker and start it again on the same port. keep_sessions: the same container
        is stopped (SIGTERM) and started, so what its config persists survives; otherwise a fresh
        container replaces it."""
        if self._container is None:
            raise BrokerError(f"{self._label()} is not running, so it cannot be restarted")
        if keep_sessions and not self._engine.local:
            raise BrokerError(f"{self._label()} on remote engine {self._engine.url}: docker gives a restarted "
                              f"container a new port there; use restart(keep_sessions=False)")
        super().stop()  # capture off (ExternalBroker.stop stops only capture)
        if keep_sessions:
            self._container.stop(timeout=10)
            time.sleep(downtime)
            try:
                self._container.start()
            except self._engine.errors.APIError as exc:
                raise BrokerError(f"{self._label()} did not start again on port {self.port} "
                                  f"({exc.explanation or exc})") from None
            self._wait_answering()
        else:
            self._remove_container()
            time.sleep(downtime)
            self._launch(self.port)
        self._resume_capture()

    def mute_pings(self, muted: bool = True) -> None:
        """The container is frozen (docker pause) or thawed: a broker that answers nothing at all."""
        if self._container is None:
            raise BrokerError(f"{self._label()} is not running")
        if muted:
            self._container.pause()
        else:
            self._container.unpause()


def is_docker_spec(spec: str) -> bool:
    """True for a --broker value that names an image: docker:IMAGE[:TAG]."""
    return spec.startswith(SPEC_PREFIX)


def make_docker_broker(spec: str, files: Mapping[str, FileContent] | None = None,
                       container_port: int = MOSQUITTO_PORT, credentials: tuple[str, str] | None = None,
                       engine_url: str | None = None, **kwargs: Any) -> DockerBroker:
    """A DockerBroker from a --broker value `docker:IMAGE[:TAG]` (not started)."""
    image = spec[len(SPEC_PREFIX):] if is_docker_spec(spec) else ""
    if not image or any(c.isspace() for c in image):
        raise BrokerError(f"--broker {spec!r}: expected docker:IMAGE[:TAG], e.g. docker:{MOSQUITTO_REPOSITORY} "
                          f"(this machine's mosquitto as an image) or docker:eclipse-mosquitto:2")
    if not 0 < container_port < 65536:
        raise BrokerError(f"--broker-container-port {container_port}: not a TCP port")
    return DockerBroker(image=image, files=dict(files or {}), container_port=container_port,
                        credentials=credentials, engine_url=engine_url, **kwargs)
