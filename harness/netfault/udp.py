"""UDP fault proxy: sits between UDP clients (MQTT-SN nodes) and their server (the MQTT-SN
gateway) and breaks the datagram network on demand: loss, duplication, reordering, delay and
jitter, and silence (a gateway that stops answering, or a node that cannot be heard).

Each client address the proxy hears from gets its own socket towards the upstream, as a NAT
would, so the upstream still sees one address per client. One background thread runs every
socket and timer; faults are seeded random draws, so a run repeats. "up" is client -> upstream,
"down" is upstream -> client.
"""
from __future__ import annotations

import collections
import concurrent.futures
import heapq
import itertools
import random
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import NetFaultError
from .conditions import DOWN, UP, directions


@dataclass(frozen=True)
class UdpStats:
    """Datagrams counted by one proxy: forwarded each way (duplicates included), and what the
    faults did."""
    clients: int
    up: int
    down: int
    lost: int
    duplicated: int
    reordered: int
    delayed: int
    silenced: int


class UdpFault:
    """A fault in force on a UDP proxy; ends with clear() or at the end of its `with` block."""

    def __init__(self, proxy: "UdpFaultProxy", kind: str, detail: str, dirs: tuple[str, ...]) -> None:
        self.proxy, self.kind, self.detail, self.directions = proxy, kind, detail, dirs
        self.active = True

    def __enter__(self) -> "UdpFault":
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()

    def clear(self) -> None:
        """End the fault now (idempotent)."""
        self.proxy.end(self)

    def __repr__(self) -> str:
        return f"<UdpFault {self.kind} {self.detail} {'active' if self.active else 'inactive'}>"


class _Leg:
    """One client: its address and the proxy's socket towards the upstream for it."""

    def __init__(self, client: tuple, sock: socket.socket) -> None:
        self.client, self.sock = client, sock
        self.used = time.monotonic()
        self.held: dict[str, list | None] = {UP: None, DOWN: None}  # a datagram held back to reorder


RECEIVE_BUFFER = 4 << 20


class UdpFaultProxy:
    """A UDP proxy in front of `upstream_host:upstream_port` whose faults a test switches on."""

    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, advertise_host: str | None = None, seed: int = 0,
                 max_clients: int = 256) -> None:
        self.upstream = (upstream_host, int(upstream_port))
        self.listen_host, self._want_port, self._advertise = listen_host, listen_port, advertise_host
        self.max_clients = max_clients
        self._random = random.Random(seed)
        self._faults: dict[str, dict[str, tuple[UdpFault, Any]]] = {UP: {}, DOWN: {}}
        self._legs: dict[tuple, _Leg] = {}
        self._timers: list = []
        self._tick = itertools.count()
        self._counts = collections.Counter()
        self.events: collections.deque = collections.deque(maxlen=1000)  # (monotonic, text)
        self._inbox: collections.deque = collections.deque()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r = self._wake_w = None
        self.port = 0

    # -- lifetime ---------------------------------------------------------------------------
    def start(self) -> "UdpFaultProxy":
        """Bind the listening socket and start the proxy's thread."""
        if self._thread is not None:
            return self
        try:
            self._upstream_addr = socket.getaddrinfo(*self.upstream, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
        except OSError as exc:
            raise NetFaultError(f"netfault udp: cannot resolve upstream {self.upstream[0]}:{self.upstream[1]} "
                                f"({exc})") from None
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)  # bursts (capped by the kernel)
        try:
            self._listener.bind((self.listen_host, self._want_port))
        except OSError as exc:
            self._listener.close()
            raise NetFaultError(f"netfault udp: cannot listen on {self.listen_host}:{self._want_port} "
                                f"({exc.strerror}); choose another address or port") from None
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"netfault-udp-{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Close every socket and stop the thread (idempotent)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake()
        thread.join(10)
        self._thread = None

    def __enter__(self) -> "UdpFaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def host(self) -> str:
        """Address a client should send to."""
        if self._advertise:
            return self._advertise
        return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1"}.get(self.listen_host, self.listen_host)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __repr__(self) -> str:
        return f"<UdpFaultProxy {self.listen_host}:{self.port} -> {self.upstream[0]}:{self.upstream[1]}>"

    # -- thread plumbing ----------------------------------------------------------------------
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (OSError, AttributeError):
            pass

    def _call(self, fn: Callable, *args: Any) -> Any:
        """Run fn(*args) in the proxy's thread and return its result (or raise its exception)."""
        thread = self._thread
        if thread is None:
            raise NetFaultError(f"netfault: {self!r} is not running; use it as `with UdpFaultProxy(...)` or start()")
        if threading.current_thread() is thread:
            return fn(*args)
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                future.set_exception(exc)

        self._inbox.append(run)
        self._wake()
        return future.result(10)

    def _log(self, text: str) -> None:
        self.events.append((time.monotonic(), text))

    def _run(self) -> None:
        try:
            while not self._stopping:
                timeout = max(0.0, self._timers[0][0] - time.monotonic()) if self._timers else None
                for key, _ in self._selector.select(timeout):
                    if key.fileobj is self._wake_r:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except BlockingIOError:
                            pass
                    elif key.fileobj is self._listener:
                        self._read_clients()
                    else:
                        self._read_upstream(key.data)
                while self._inbox:
                    self._inbox.popleft()()
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, fn, args = heapq.heappop(self._timers)
                    fn(*args)
        finally:
            self._selector.close()
            for leg in self._legs.values():
                leg.sock.close()
            self._legs.clear()
            self._timers.clear()
            for sock in (self._listener, self._wake_r, self._wake_w):
                sock.close()

    def _later(self, delay: float, fn: Callable, *args: Any) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._tick), fn, args))

    # -- forwarding ---------------------------------------------------------------------------
    def _leg(self, client: tuple) -> _Leg:
        leg = self._legs.get(client)
        if leg is None:
            if len(self._legs) >= self.max_clients:  # the least recently heard client goes
                oldest = min(self._legs.values(), key=lambda l: l.used)
                self._selector.unregister(oldest.sock)
                oldest.sock.close()
                del self._legs[oldest.client]
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind(("127.0.0.1" if self._upstream_addr[0].startswith("127.") else "0.0.0.0", 0))
            sock.connect(self._upstream_addr)
            sock.setblocking(False)
            leg = self._legs[client] = _Leg(client, sock)
            self._selector.register(sock, selectors.EVENT_READ, leg)
            self._log(f"new client {client[0]}:{client[1]}")
        leg.used = time.monotonic()
        return leg

    def _read_clients(self) -> None:
        while True:
            try:
                data, client = self._listener.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._forward(UP, self._leg(client), data)

    def _read_upstream(self, leg: _Leg) -> None:
        while True:
            try:
                data = leg.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. the upstream's port unreachable (a gateway restarting)
                return
            leg.used = time.monotonic()
            self._forward(DOWN, leg, data)

    def _fault(self, direction: str, kind: str) -> Any:
        entry = self._faults[direction].get(kind)
        return entry[1] if entry is not None else None

    def _forward(self, direction: str, leg: _Leg, data: bytes) -> None:
        if self._fault(direction, "silence"):
            self._counts["silenced"] += 1
            return
        loss = self._fault(direction, "loss")
        if loss and self._random.random() < loss:
            self._counts["lost"] += 1
            return
        copies = 1
        dup = self._fault(direction, "duplicate")
        if dup and self._random.random() < dup:
            copies = 2
            self._counts["duplicated"] += 1
        delay = self._fault(direction, "delay")
        for _ in range(copies):
            if delay:
                ms, jitter = delay
                wait = max(0.0, ms + self._random.uniform(-jitter, jitter)) / 1000.0
                self._counts["delayed"] += 1
                self._later(wait, self._emit, direction, leg, data)
            else:
                self._emit(direction, leg, data)

    def _emit(self, direction: str, leg: _Leg, data: bytes) -> None:
        reorder = self._fault(direction, "reorder")
        held = leg.held[direction]
        if held is not None:  # the datagram held back goes after this one
            leg.held[direction] = None
            self._send(direction, leg, data)
            self._send(direction, leg, held[0])
            self._counts["reordered"] += 1
            return
        if reorder and self._random.random() < reorder[0]:
            token = [data]
            leg.held[direction] = token
            self._later(reorder[1], self._release, direction, leg, token)
            return
        self._send(direction, leg, data)

    def _release(self, direction: str, leg: _Leg, token: list) -> None:
        """Nothing came to overtake a held datagram: it goes on, in order after all."""
        if leg.held[direction] is token:
            leg.held[direction] = None
            self._send(direction, leg, token[0])

    def _send(self, direction: str, leg: _Leg, data: bytes) -> None:
        try:
            if direction == UP:
                leg.sock.send(data)
            else:
                self._listener.sendto(data, leg.client)
        except OSError as exc:
            self._log(f"{direction} datagram to {'upstream' if direction == UP else leg.client} not sent: {exc}")
            return
        self._counts[direction] += 1

    # -- faults -------------------------------------------------------------------------------
    def _set(self, kind: str, value: Any, direction: str, detail: str) -> UdpFault:
        dirs = directions(direction)

        def apply() -> UdpFault:
            busy = [d for d in dirs if kind in self._faults[d]]
            if busy:
                raise NetFaultError(f"netfault {self!r}: {kind} already set on direction {busy[0]!r}; clear() it "
                                    "(or leave its with-block) before setting another")
            fault = UdpFault(self, kind, f"{detail} {direction}", dirs)
            for d in dirs:
                self._faults[d][kind] = (fault, value)
            self._log(f"start {kind} {fault.detail}")
            return fault
        return self._call(apply)

    def end(self, fault: UdpFault) -> None:
        """End a fault (what UdpFault.clear() calls)."""
        def clear() -> None:
            if not fault.active:
                return
            fault.active = False
            for d in fault.directions:
                entry = self._faults[d].get(fault.kind)
                if entry is not None and entry[0] is fault:
                    del self._faults[d][fault.kind]
            if fault.kind == "reorder":  # whatever is held back goes now
                for leg in self._legs.values():
                    for d in fault.directions:
                        if leg.held[d] is not None:
                            self._release(d, leg, leg.held[d])
            self._log(f"end {fault.kind} {fault.detail}")
        if self._thread is None:
            fault.active = False
            return
        self._call(clear)

    @staticmethod
    def _rate(kind: str, rate: float) -> float:
        if not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise ValueError(f"netfault udp {kind}: rate {rate!r} must be above 0 and at most 1")
        return float(rate)

    def loss(self, rate: float, direction: str = "both") -> UdpFault:
        """Drop each datagram with probability `rate` (seeded)."""
        return self._set("loss", self._rate("loss", rate), direction, f"{rate:.0%}")

    def duplicate(self, rate: float, direction: str = "both") -> UdpFault:
        """Send each datagram twice with probability `rate`."""
        return self._set("duplicate", self._rate("duplicate", rate), direction, f"{rate:.0%}")

    def reorder(self, rate: float, direction: str = "both", hold_ms: float = 50.0) -> UdpFault:
        """Hold a datagram back with probability `rate` and send it after the next one on the same
        client and direction (or after `hold_ms`, in order, when no next one comes)."""
        if hold_ms <= 0:
            raise ValueError(f"netfault udp reorder: hold_ms {hold_ms} must be above zero")
        return self._set("reorder", (self._rate("reorder", rate), hold_ms / 1000.0), direction,
                         f"{rate:.0%} hold {hold_ms} ms")

    def delay(self, ms: float, jitter_ms: float = 0.0, direction: str = "both") -> UdpFault:
        """Delay each datagram by ms +- jitter_ms (uniform, seeded): jitter above the spacing of
        datagrams reorders them, as a real network does."""
        if ms < 0 or jitter_ms < 0 or (ms == 0 and jitter_ms == 0):
            raise ValueError(f"netfault udp delay: ms={ms} jitter_ms={jitter_ms}: give values >= 0, not both zero")
        return self._set("delay", (float(ms), float(jitter_ms)), direction, f"{ms}+-{jitter_ms} ms")

    def silence(self, direction: str = "both") -> UdpFault:
        """Pass nothing: with "down" the gateway goes silent (it hears the clients but they never
        hear it), with "up" the clients cannot be heard, with "both" the network is gone."""
        return self._set("silence", True, direction, "")

    def clear_faults(self) -> None:
        """End every fault in force."""
        for fault in {entry[0] for d in (UP, DOWN) for entry in self._call(lambda d=d: list(self._faults[d].values()))}:
            fault.clear()

    def stats(self) -> UdpStats:
        """Counts so far: clients seen, datagrams forwarded up and down, and the faults' work."""
        def read() -> UdpStats:
            c = self._counts
            return UdpStats(len(self._legs), c[UP], c[DOWN], c["lost"], c["duplicated"], c["reordered"],
                            c["delayed"], c["silenced"])
        return self._call(read)
