"""TCP fault proxy: sits between a board and its broker or HTTP endpoint and breaks the network
on demand (latency, jitter, bandwidth, cut, blackhole, refuse, dropped or corrupted bytes).

The board is pointed at the proxy; the proxy forwards to the real upstream. All sockets live in
one background thread running an asyncio loop; the clean path hands each received chunk straight
to the other leg (no per-byte work, TCP_NODELAY on both legs), so the proxy costs next to nothing
until a fault is set. "up" is board -> upstream, "down" is upstream -> board.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import errno
import inspect
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

UP, DOWN = "up", "down"
_DIRECTIONS = {"up": (UP,), "down": (DOWN,), "both": (UP, DOWN)}
_EOF = None  # queue marker: forward a FIN
_QUEUE_HIGH, _QUEUE_LOW = 256 * 1024, 64 * 1024  # delayed bytes that pause / resume the reader


class NetFaultError(RuntimeError):
    """A fault that cannot be applied in the proxy's current state (message says what to do)."""


@dataclass(frozen=True)
class ProxyStats:
    """Counters of one proxy; bytes are counted as read from the sending side. Current
    connections are those forwarded to the upstream. Refused connections never reach the proxy
    (the kernel answers them), so they are not counted."""
    connections_seen: int
    current_connections: int
    bytes_up: int
    bytes_down: int
    cut: int


def _directions(direction: str) -> tuple[str, ...]:
    try:
        return _DIRECTIONS[direction]
    except (KeyError, TypeError):
        raise ValueError(f"netfault: direction {direction!r} is not one of 'up', 'down', 'both'") from None


def _close_socket(sock: socket.socket, mode: str) -> None:
    """Close a raw socket with an RST (mode 'rst') or a FIN after draining unread input."""
    try:
        if mode == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            while sock.recv(65536):  # unread input would turn the close into an RST
                pass
    except OSError:
        pass
    sock.close()


def _peer_gone(sock: socket.socket) -> bool:
    """True when the peer already closed or reset (Linux TCP_INFO state is not ESTABLISHED)."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != 1  # 1 = TCP_ESTABLISHED
    except OSError:
        return True


class Fault:
    """A fault in force on a proxy; ends with clear() or at the end of its `with` block."""

    def __init__(self, proxy: FaultProxy, kind: str, detail: str, on_clear: Callable[[], None],
                 on_enter: Callable[[], None] | None = None) -> None:
        self.proxy, self.kind, self.detail = proxy, kind, detail
        self.active = on_enter is None  # a cut is instantaneous unless held open by `with`
        self.hits = 0  # byte faults: connections whose stream was changed
        self.directions: tuple[str, ...] = (UP, DOWN)
        self._on_clear, self._on_enter = on_clear, on_enter

    def __enter__(self) -> Fault:
        if self._on_enter is not None:
            self.proxy._call(self._enter_in_loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()

    def clear(self) -> None:
        """End the fault now (idempotent)."""
        self.proxy._call(self._clear_in_loop)

    def _enter_in_loop(self) -> None:
        self.active = True
        self._on_enter()

    def _clear_in_loop(self) -> None:
        if self.active:
            self.active = False
            self._on_clear()
            self.proxy._log(f"end {self.kind} {self.detail}".rstrip())

    def __repr__(self) -> str:
        return f"<Fault {self.kind} {self.detail} {'active' if self.active else 'inactive'}>"


class _ByteFault:
    """Drop or corrupt `length` bytes of each connection's stream once, at an offset or a match."""

    def __init__(self, fault: Fault, drop: bool, at: int | None, after: int | None,
                 match: bytes | None, length: int, xor: int) -> None:
        self.fault, self.drop, self.at, self.after = fault, drop, at, after
        self.match, self.length, self.xor = match, length, xor
        self.state: dict[_Pipe, list] = {}  # pipe -> [target start or None, match tail]

    def attach(self, pipe: _Pipe, existing: bool) -> None:
        if self.match is not None:
            start = None
        elif self.at is not None:
            start = self.at
        else:
            start = (pipe.offset if existing else 0) + self.after
        self.state[pipe] = [start, b""]
        pipe.byte_faults.append(self)

    def span(self, pipe: _Pipe, base: int, data: bytes) -> tuple[int, int] | None:
        """Chunk-relative range to change in `data` (stream offsets base..), None if none."""
        st = self.state[pipe]
        if st[0] is None:
            hay = st[1] + data
            i = hay.find(self.match)
            if i < 0:
                st[1] = hay[len(hay) - len(self.match) + 1:] if len(self.match) > 1 else b""
                return None
            st[0] = base - len(st[1]) + i  # a match straddling reads is changed only from here on
        start, end = st[0], st[0] + self.length
        if end <= base + len(data):
            self.detach(pipe)
            if end > base:
                self.fault.hits += 1
        lo, hi = max(start, base), min(end, base + len(data))
        return (lo - base, hi - base) if lo < hi else None

    def detach(self, pipe: _Pipe) -> None:
        self.state.pop(pipe, None)
        if self in pipe.byte_faults:
            pipe.byte_faults.remove(self)
            pipe.refresh()


class _Leg(asyncio.Protocol):
    """One socket of a proxied connection; hands what it reads to its outgoing pipe."""

    def __init__(self, link: _Link, sock: socket.socket) -> None:
        self.link, self.sock = link, sock
        self.transport: asyncio.Transport | None = None
        self.out: _Pipe | None = None  # the pipe reading from this leg
        self.into: _Pipe | None = None  # the pipe writing to this leg
        self.pauses: set[str] = {"opening"}
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.pause_reading()  # type: ignore[attr-defined]

    def pause(self, reason: str, on: bool) -> None:
        (self.pauses.add if on else self.pauses.discard)(reason)
        t = self.transport
        if t is None or t.is_closing():
            return
        if self.pauses and t.is_reading():
            t.pause_reading()
        elif not self.pauses and not t.is_reading():
            t.resume_reading()

    def data_received(self, data: bytes) -> None:
        out = self.out
        out.offset += len(data)
        if out.fast:
            out.dst.write(data)
        else:
            out.feed(data)

    def eof_received(self) -> bool:
        self.out.push(_EOF)
        return True  # keep the other direction open (half close)

    def pause_writing(self) -> None:
        self.into.src_leg.pause("flow", True)

    def resume_writing(self) -> None:
        self.into.src_leg.pause("flow", False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.link.leg_lost(self, exc)


class _Pipe:
    """One direction of one connection: applies the faults of its direction, keeps byte order."""

    def __init__(self, proxy: FaultProxy, direction: str, src: _Leg, dst: _Leg) -> None:
        self.proxy, self.direction, self.src_leg, self.dst_leg = proxy, direction, src, dst
        self.dst: asyncio.Transport = dst.transport  # type: ignore[assignment]
        self.offset = 0
        self.queue: collections.deque = collections.deque()  # (deliver_at, bytes or _EOF)
        self.queued = 0
        self.last_at = 0.0  # deliveries never overtake each other
        self.tx_free = 0.0  # when the bandwidth-limited "wire" is free again
        self.timer: asyncio.TimerHandle | None = None
        self.byte_faults: list[_ByteFault] = []
        self.fast = True
        self.eof_sent = False
        src.out, dst.into = self, self

    def refresh(self) -> None:
        p, d = self.proxy, self.direction
        self.fast = not (self.queue or self.byte_faults or p._latency[d] or p._bandwidth[d]
                         or p._blackhole[d])

    def feed(self, data: bytes) -> None:
        if self.byte_faults:
            base = self.offset - len(data)
            spans = [(bf, s) for bf in list(self.byte_faults) if (s := bf.span(self, base, data))]
            if spans:
                buf = bytearray(data)
                for bf, (lo, hi) in spans:
                    if not bf.drop:
                        buf[lo:hi] = bytes(b ^ bf.xor for b in buf[lo:hi])
                for bf, (lo, hi) in sorted(spans, key=lambda x: -x[1][0]):
                    if bf.drop:
                        del buf[lo:hi]
                data = bytes(buf)
        if data:
            self.push(data)

    def push(self, item: bytes | None) -> None:
        """Queue `item` for delivery after the configured latency and bandwidth."""
        p, d = self.proxy, self.direction
        if self.fast and item is _EOF:
            self.deliver_now(_EOF)
            return
        now = p._loop.time()
        pieces: Iterable = [item]
        bw = p._bandwidth[d]
        if bw and item:
            step = max(1, min(16384, int(bw / 100)))  # ~10 ms slices keep the rate smooth
            pieces = [item[i:i + step] for i in range(0, len(item), step)]
        lat = p._latency[d]
        for piece in pieces:
            at = now
            if bw and piece:
                at = self.tx_free = max(self.tx_free, now) + len(piece) / bw
            if lat:
                at += max(0.0, lat[0] + p._random.uniform(-lat[1], lat[1]))
            at = self.last_at = max(at, self.last_at)
            self.queue.append((at, piece))
            self.queued += len(piece) if piece else 0
        self.fast = False
        if self.queued > _QUEUE_HIGH:
            self.src_leg.pause("queue", True)
        self.kick()

    def kick(self) -> None:
        if self.timer is None and self.queue and not self.proxy._blackhole[self.direction]:
            self.timer = self.proxy._loop.call_at(self.queue[0][0], self.deliver_due)

    def deliver_due(self) -> None:
        self.timer = None
        if self.proxy._blackhole[self.direction]:
            return  # held until the blackhole ends
        now = self.proxy._loop.time()
        while self.queue and self.queue[0][0] <= now + 0.0002:
            _, item = self.queue.popleft()
            self.queued -= len(item) if item else 0
            self.deliver_now(item)
        if self.queued < _QUEUE_LOW:
            self.src_leg.pause("queue", False)
        self.refresh()
        self.kick()

    def deliver_now(self, item: bytes | None) -> None:
        if self.dst.is_closing():
            return
        if item is _EOF:
            self.eof_sent = True
            if self.src_leg.lost or self.src_leg.into.eof_sent:
                self.dst.close()  # both ways finished: release both sockets
                self.src_leg.transport.close()
            else:
                self.dst.write_eof()
        else:
            self.dst.write(item)

    def drop_queue(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.queued = 0


class _Link:
    """One proxied connection: the board's socket, the upstream socket, a pipe each way."""

    def __init__(self, proxy: FaultProxy, client: socket.socket, peer: Any) -> None:
        self.proxy, self.client_sock, self.peer = proxy, client, peer
        self.upstream_sock: socket.socket | None = None
        self.legs: list[_Leg] = []
        self.pipes: list[_Pipe] = []
        self.closed = False
        self.task = proxy._loop.create_task(self.open())

    async def open(self) -> None:
        p = self.proxy
        try:
            if not p._passable.is_set():
                await p._passable.wait()  # a blackholed network does not complete handshakes
                if _peer_gone(self.client_sock):  # the client gave up waiting: nothing to replay
                    p._log(f"{self.peer} left during the blackhole; not forwarded")
                    self.abort("fin")
                    return
            up = self.upstream_sock = socket.socket(p._upstream_family, socket.SOCK_STREAM)
            up.setblocking(False)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.wait_for(p._loop.sock_connect(up, p.upstream), p.connect_timeout)
            _, uleg = await p._loop.create_connection(lambda: _Leg(self, up), sock=up)
            _, cleg = await p._loop.connect_accepted_socket(lambda: _Leg(self, self.client_sock),
                                                            self.client_sock)
        except asyncio.CancelledError:
            return
        except (OSError, asyncio.TimeoutError) as e:
            p._log(f"upstream {p.upstream[0]}:{p.upstream[1]} unreachable ({e!r}); reset {self.peer}")
            self.abort("rst")
            return
        self.legs = [cleg, uleg]
        self.pipes = [_Pipe(p, UP, cleg, uleg), _Pipe(p, DOWN, uleg, cleg)]
        for pipe in self.pipes:
            for bf in p._byte_faults:
                if pipe.direction in bf.fault.directions:
                    bf.attach(pipe, existing=False)
            pipe.refresh()
            pipe.src_leg.pause("blackhole", p._blackhole[pipe.direction])
        for leg in self.legs:
            leg.pause("opening", False)

    def leg_lost(self, leg: _Leg, exc: Exception | None) -> None:
        other = self.legs[1] if leg is self.legs[0] else self.legs[0]
        leg.into.drop_queue()
        if exc is not None and not self.closed:
            self.abort("rst")  # a reset on one side resets the other
        elif not other.lost:
            leg.out.push(_EOF)  # close the other side once what is queued is delivered
        if all(lg.lost for lg in self.legs):
            self.forget()

    def abort(self, mode: str) -> None:
        """Close both sides now, by RST or FIN, discarding whatever is queued."""
        self.closed = True
        self.task.cancel()
        for pipe in self.pipes:
            pipe.drop_queue()
        for sock in (self.client_sock, self.upstream_sock):
            if sock is not None and sock.fileno() >= 0:
                _close_socket(sock, mode)
        for leg in self.legs:
            if leg.transport is not None:
                leg.transport.abort()  # its socket is closed already; this drops the reader
        self.forget()

    def forget(self) -> None:
        p = self.proxy
        if self in p._links:
            p._links.remove(self)
            for pipe in self.pipes:
                p._closed_bytes[pipe.direction] += pipe.offset
                for bf in list(pipe.byte_faults):
                    bf.detach(pipe)


class Schedule:
    """Faults started and ended at set times in the proxy's thread; wait() reports failures."""

    def __init__(self, proxy: FaultProxy, entries: list[tuple[float, str, float, dict]]) -> None:
        self.proxy, self.entries = proxy, entries
        self.errors: list[str] = []
        self.reported = False  # errors already raised by wait()
        self.events: list[tuple[float, str]] = []  # (seconds since start, what happened)
        self._done = threading.Event()
        self._handles: list[asyncio.TimerHandle] = []
        self._faults: list[Fault] = []
        self.t0 = 0.0

    @property
    def windows(self) -> list[tuple[float, float]]:
        return [(self.t0 + at, self.t0 + at + dur) for at, _, dur, _ in self.entries]

    def _start_in_loop(self) -> None:
        loop = self.proxy._loop
        self.t0 = loop.time()
        for at, kind, dur, kwargs in self.entries:
            self._handles.append(loop.call_at(self.t0 + at, self._begin, kind, kwargs))
            self._handles.append(loop.call_at(self.t0 + at + dur, self._end, kind))
        last = max(at + dur for at, _, dur, _ in self.entries)
        self._handles.append(loop.call_at(self.t0 + last, self._finish))

    def _note(self, what: str) -> None:
        self.events.append((round(self.proxy._loop.time() - self.t0, 4), what))

    def _begin(self, kind: str, kwargs: dict) -> None:
        try:
            fault = getattr(self.proxy, kind)(**kwargs)  # runs inline: we are in the proxy thread
            if fault._on_enter is not None:
                fault._enter_in_loop()
            self._faults.append(fault)
            self._note(f"start {kind}")
        except (NetFaultError, ValueError) as e:
            self.errors.append(str(e))
            self._note(f"failed {kind}: {e}")

    def _end(self, kind: str) -> None:
        for fault in [f for f in self._faults if f.kind == kind]:
            fault._clear_in_loop()
            self._faults.remove(fault)
            self._note(f"end {kind}")

    def _finish(self) -> None:
        if self in self.proxy._schedules:
            self.proxy._schedules.remove(self)
        self._done.set()

    def _cancel_in_loop(self) -> None:
        for h in self._handles:
            h.cancel()
        for fault in self._faults:
            fault._clear_in_loop()
        self._faults.clear()
        self._finish()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Stop the schedule and end whatever fault it has in force."""
        self.proxy._call(self._cancel_in_loop)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the last entry ended; raise NetFaultError if an entry could not apply."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"netfault schedule {self.entries} still running after {timeout} s")
        if self.errors:
            self.reported = True
            raise NetFaultError(f"netfault schedule: {self.errors[0]}")

    def __enter__(self) -> Schedule:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class FaultProxy:
    """A TCP proxy in front of `upstream_host:upstream_port` whose faults a test switches on."""

    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, advertise_host: str | None = None,
                 connect_timeout: float = 5.0, seed: int = 0) -> None:
        self.upstream = (upstream_host, int(upstream_port))
        self.listen_host, self.connect_timeout = listen_host, connect_timeout
        self._advertise = advertise_host
        self._want_port = listen_port
        self._random = random.Random(seed)  # jitter is the same on every run
        self._links: list[_Link] = []
        self._byte_faults: list[_ByteFault] = []
        self._latency: dict[str, tuple[float, float] | None] = {UP: None, DOWN: None}
        self._bandwidth: dict[str, float | None] = {UP: None, DOWN: None}
        self._blackhole = {UP: False, DOWN: False}
        self._refusing = False
        self._cutting: str | None = None  # RST/FIN mode while a `with cut()` holds the link down
        self._schedules: list[Schedule] = []  # running
        self.schedules: list[Schedule] = []  # every schedule started, for reports
        self._all_faults: list[Fault] = []
        self._closed_bytes = {UP: 0, DOWN: 0}
        self._seen = self._cut = 0
        self.events: collections.deque = collections.deque(maxlen=1000)  # (monotonic, text)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self.port = 0

    # -- lifetime -------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Bind the listening socket and start the proxy thread."""
        info = socket.getaddrinfo(*self.upstream, type=socket.SOCK_STREAM)
        self._upstream_family = info[0][0]
        self._listener = self._bind()
        self.port = self._listener.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True,
                                        name=f"netfault-{self.port}")
        self._thread.start()
        ready.wait()
        return self

    def _bind(self) -> socket.socket:
        # An explicitly bound port survives the shutdown()/listen() pair that refuse() uses.
        for _ in range(20):
            port = self._want_port
            family = socket.getaddrinfo(self.listen_host, 0, type=socket.SOCK_STREAM)[0][0]
            if not port:
                with socket.socket(family, socket.SOCK_STREAM) as probe:
                    probe.bind((self.listen_host, 0))
                    port = probe.getsockname()[1]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.listen_host, port))
            except OSError as e:
                sock.close()
                if self._want_port or e.errno != errno.EADDRINUSE:
                    raise NetFaultError(f"netfault: cannot listen on {self.listen_host}:{port} ({e.strerror}); "
                                        "choose another address or port") from None
                continue
            sock.listen(128)
            sock.setblocking(False)
            return sock
        raise NetFaultError(f"netfault: no free port on {self.listen_host}; pass listen_port")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._thread_id = threading.get_ident()
        self._passable = asyncio.Event()
        self._passable.set()
        self._loop.add_reader(self._listener, self._accept)
        ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def close(self) -> None:
        """Close every socket, end every schedule and stop the thread (idempotent)."""
        if self._thread is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        fut.result(10)
        self._thread.join(10)
        self._thread = None

    async def _shutdown(self) -> None:
        for sched in list(self._schedules):
            sched._cancel_in_loop()
        self._loop.remove_reader(self._listener)
        self._listener.close()
        for link in list(self._links):
            link.abort("fin")
        for _ in range(3):  # let transports run their connection_lost callbacks
            await asyncio.sleep(0)
        self._loop.call_soon(self._loop.stop)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def host(self) -> str:
        """Address a client should connect to."""
        if self._advertise:
            return self._advertise
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.listen_host, self.listen_host)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def __repr__(self) -> str:
        return f"<FaultProxy {self.listen_host}:{self.port} -> {self.upstream[0]}:{self.upstream[1]}>"

    # -- thread plumbing ---------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run fn in the proxy thread and return its result (or raise its exception)."""
        if self._thread is None:
            raise NetFaultError(f"netfault: {self!r} is not running; use it as `with FaultProxy(...)` or call start()")
        if threading.get_ident() == self._thread_id:
            return fn(*args, **kwargs)
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as e:  # handed to the caller's thread
                fut.set_exception(e)
        self._loop.call_soon_threadsafe(run)
        return fut.result(10)

    def _log(self, text: str) -> None:
        self.events.append((time.monotonic(), text))

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # listener shut down by refuse()
            self._seen += 1
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._cutting:
                self._cut += 1
                self._log(f"cut new connection from {peer} ({self._cutting})")
                _close_socket(sock, self._cutting)
                continue
            self._links.append(_Link(self, sock, peer))

    # -- stats --------------------------------------------------------------------------------
    def stats(self) -> ProxyStats:
        """Connections seen and open, bytes each way, connections cut."""
        def read() -> ProxyStats:
            live = {UP: 0, DOWN: 0}
            for link in self._links:
                for pipe in link.pipes:
                    live[pipe.direction] += pipe.offset
            current = sum(1 for link in self._links if link.pipes)  # forwarded, not still dialing
            return ProxyStats(self._seen, current, self._closed_bytes[UP] + live[UP],
                              self._closed_bytes[DOWN] + live[DOWN], self._cut)
        return self._call(read)

    def wait_connections(self, *, seen: int | None = None, current: int | None = None,
                         timeout: float = 10.0) -> ProxyStats:
        """Block until at least `seen` connections were accepted and/or `current` are open."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()
            if (seen is None or st.connections_seen >= seen) and (current is None or st.current_connections >= current):
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"netfault {self!r}: wanted seen>={seen} current>={current} within "
                                   f"{timeout} s, have {st}; is the client pointed at {self.host}:{self.port}?")
            time.sleep(0.005)

    # -- faults (public: thread-safe wrappers around the loop-side _fault methods) --------
    def latency(self, ms: float, jitter_ms: float = 0.0, direction: str = "both") -> Fault:
        """Delay every byte by ms +- jitter_ms (uniform, seeded; order is kept)."""
        return self._call(self._latency_fault, ms, jitter_ms, direction)

    def bandwidth(self, bytes_per_s: float, direction: str = "both") -> Fault:
        """Limit the rate each connection's bytes pass at; the sender is slowed by back-pressure."""
        return self._call(self._bandwidth_fault, bytes_per_s, direction)

    def cut(self, mode: str = "rst") -> Fault:
        """Close every open connection now by RST ('rst') or FIN ('fin'); in a `with` block
        also cut each new connection until the block ends."""
        return self._call(self._cut_fault, mode)

    def blackhole(self, direction: str = "both") -> Fault:
        """Pass nothing while connections stay open (the half-open case keepalive must catch).
        New connections are accepted by the kernel but not forwarded until the blackhole ends,
        and dropped if the client closed meanwhile. Held bytes flow again afterwards."""
        return self._call(self._blackhole_fault, direction)

    def refuse(self) -> Fault:
        """Refuse new connections (ECONNREFUSED) until cleared; open ones are untouched."""
        return self._call(self._refuse_fault)

    def corrupt(self, direction: str = "up", *, at: int | None = None, after: int | None = None,
                match: bytes | None = None, length: int | None = None, xor: int = 0xFF) -> Fault:
        """XOR `length` bytes of each connection's stream once: at stream offset `at`, `after`
        more bytes, or where `match` first appears."""
        return self._call(self._byte_fault, False, direction, at, after, match, length, xor)

    def drop(self, direction: str = "up", *, at: int | None = None, after: int | None = None,
             match: bytes | None = None, length: int | None = None) -> Fault:
        """Remove `length` bytes from each connection's stream once (positions as corrupt())."""
        return self._call(self._byte_fault, True, direction, at, after, match, length, 0)

    def clear_faults(self) -> None:
        """End every fault and schedule in force."""
        def clear() -> None:
            for sched in list(self._schedules):
                sched._cancel_in_loop()
            for fault in list(self._all_faults):
                fault._clear_in_loop()
        self._call(clear)

    def schedule(self, entries: Sequence[tuple]) -> Schedule:
        """Run faults at times in seconds from now: [(at_s, fault, duration_s[, kwargs]), ...],
        fault being 'cut', 'blackhole', 'refuse', 'latency', 'bandwidth', 'corrupt' or 'drop'."""
        parsed = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, (tuple, list)) or len(entry) not in (3, 4):
                raise ValueError(f"netfault schedule entry {i} {entry!r}: expected (at_s, fault, duration_s[, kwargs])")
            at, kind, dur = entry[:3]
            kwargs = dict(entry[3]) if len(entry) == 4 else {}
            if kind not in _SCHEDULABLE:
                raise ValueError(f"netfault schedule entry {i}: unknown fault {kind!r}; use one of {sorted(_SCHEDULABLE)}")
            if not isinstance(dur, (int, float)) or dur <= 0:
                raise ValueError(f"netfault schedule entry {i} ({kind}): duration {dur!r} s must be above zero")
            if not isinstance(at, (int, float)) or at < 0:
                raise ValueError(f"netfault schedule entry {i} ({kind}): start {at!r} s must be zero or more")
            try:
                inspect.signature(getattr(self, kind)).bind(**kwargs)
            except TypeError as e:
                raise ValueError(f"netfault schedule entry {i} ({kind}): bad arguments {kwargs}: {e}") from None
            parsed.append((float(at), kind, float(dur), kwargs))
        if not parsed:
            raise ValueError("netfault schedule: no entries; give at least one (at_s, fault, duration_s)")
        parsed.sort(key=lambda e: e[0])
        for a, b in zip(parsed, parsed[1:]):
            if b[0] < a[0] + a[2]:
                raise ValueError(f"netfault schedule: {b[1]} at {b[0]} s overlaps {a[1]} at {a[0]} s "
                                 f"lasting {a[2]} s; run them one after the other")
        sched = Schedule(self, parsed)

        def start() -> Schedule:
            now = self._loop.time()
            for other in self._schedules:
                for s, e in other.windows:
                    for at, kind, dur, _ in parsed:
                        if now + at < e and s < now + at + dur:
                            raise ValueError(f"netfault schedule: {kind} at {at} s overlaps a schedule already "
                                             f"running until {e - now:.3f} s from now; wait() or cancel() it first")
            self._schedules.append(sched)
            self.schedules.append(sched)
            sched._start_in_loop()
            return sched
        return self._call(start)

    # -- loop-side fault implementations ---------------------------------------------------
    def _register(self, fault: Fault) -> Fault:
        self._all_faults = [f for f in self._all_faults if f.active]
        self._all_faults.append(fault)
        self._log(f"start {fault.kind} {fault.detail}".rstrip())
        return fault

    def _pipes(self, dirs: Iterable[str]) -> list[_Pipe]:
        return [p for link in self._links for p in link.pipes if p.direction in dirs]

    def _conflict(self, kind: str, table: dict, dirs: tuple[str, ...]) -> None:
        busy = [d for d in dirs if table[d]]
        if busy:
            raise NetFaultError(f"netfault {self!r}: {kind} already set on direction {busy[0]!r}; "
                                "clear() it (or leave its with-block) before setting another")

    def _latency_fault(self, ms: float, jitter_ms: float = 0.0, direction: str = "both") -> Fault:
        dirs = _directions(direction)
        if ms < 0 or jitter_ms < 0 or (ms == 0 and jitter_ms == 0):
            raise ValueError(f"netfault latency: ms={ms} jitter_ms={jitter_ms}: give values >= 0, not both zero")
        self._conflict("latency", self._latency, dirs)
        for d in dirs:
            self._latency[d] = (ms / 1000.0, jitter_ms / 1000.0)

        def clear() -> None:
            for d in dirs:
                self._latency[d] = None
            self._refresh(dirs)
        self._refresh(dirs)
        return self._register(Fault(self, "latency", f"{ms}+-{jitter_ms} ms {direction}", clear))

    def _bandwidth_fault(self, bytes_per_s: float, direction: str = "both") -> Fault:
        dirs = _directions(direction)
        if not isinstance(bytes_per_s, (int, float)) or bytes_per_s <= 0:
            raise ValueError(f"netfault bandwidth: {bytes_per_s!r} bytes/s must be above zero")
        self._conflict("bandwidth", self._bandwidth, dirs)
        for d in dirs:
            self._bandwidth[d] = float(bytes_per_s)
        for pipe in self._pipes(dirs):
            pipe.tx_free = self._loop.time()

        def clear() -> None:
            for d in dirs:
                self._bandwidth[d] = None
            self._refresh(dirs)
        self._refresh(dirs)
        return self._register(Fault(self, "bandwidth", f"{bytes_per_s} B/s {direction}", clear))

    def _cut_fault(self, mode: str = "rst") -> Fault:
        if mode not in ("rst", "fin"):
            raise ValueError(f"netfault cut: mode {mode!r} is not 'rst' or 'fin'")
        if not self._links:
            raise NetFaultError(f"netfault {self!r}: cut() with no open connection, nothing to cut; "
                                "wait_connections() first, or use refuse() to keep clients out")
        if self._cutting:
            raise NetFaultError(f"netfault {self!r}: a cut is already held; leave its with-block first")
        n = len(self._links)
        for link in list(self._links):
            link.abort(mode)
        self._cut += n
        self._log(f"cut {n} connection(s) ({mode})")

        def hold() -> None:
            self._cutting = mode

        def clear() -> None:
            self._cutting = None
        return self._register(Fault(self, "cut", mode, clear, on_enter=hold))

    def _blackhole_fault(self, direction: str = "both") -> Fault:
        dirs = _directions(direction)
        self._conflict("blackhole", self._blackhole, dirs)
        self._set_blackhole(dirs, True)
        return self._register(Fault(self, "blackhole", direction, lambda: self._set_blackhole(dirs, False)))

    def _set_blackhole(self, dirs: tuple[str, ...], on: bool) -> None:
        for d in dirs:
            self._blackhole[d] = on
        if any(self._blackhole.values()):
            self._passable.clear()
        else:
            self._passable.set()
        for pipe in self._pipes(dirs):
            pipe.src_leg.pause("blackhole", on)
            pipe.refresh()
            pipe.kick()

    def _refuse_fault(self) -> Fault:
        if self._refusing:
            raise NetFaultError(f"netfault {self!r}: already refusing; clear() the first refuse() fault")
        self._accept()  # whoever is already in the backlog got in before the refusal
        self._loop.remove_reader(self._listener)
        self._listener.shutdown(socket.SHUT_RDWR)  # Linux: the bound port now answers RST
        self._refusing = True

        def clear() -> None:
            self._refusing = False
            self._listener.listen(128)
            self._loop.add_reader(self._listener, self._accept)
        return self._register(Fault(self, "refuse", "", clear))

    def _byte_fault(self, drop: bool, direction: str, at: int | None, after: int | None,
                    match: bytes | None, length: int | None, xor: int) -> Fault:
        dirs = _directions(direction)
        name = "drop" if drop else "corrupt"
        if sum(x is not None for x in (at, after, match)) != 1:
            raise ValueError(f"netfault {name}: give exactly one of at=, after=, match=")
        if (at is not None and at < 0) or (after is not None and after < 0):
            raise ValueError(f"netfault {name}: at/after must be a byte count >= 0")
        if match is not None and (not isinstance(match, (bytes, bytearray)) or not match):
            raise ValueError(f"netfault {name}: match must be non-empty bytes, got {match!r}")
        length = length if length is not None else (len(match) if match is not None else 1)
        if length <= 0:
            raise ValueError(f"netfault {name}: length {length} must be above zero")
        if not drop and not 0 < xor < 256:
            raise ValueError(f"netfault corrupt: xor {xor} must be 1..255 so the bytes change")
        where = f"at={at}" if at is not None else f"after={after}" if after is not None else f"match={match!r}"
        fault = Fault(self, name, f"{length} B {where} {direction}", lambda: None)
        fault.directions = dirs
        bf = _ByteFault(fault, drop, at, after, bytes(match) if match else None, length, xor)

        def clear() -> None:
            self._byte_faults.remove(bf)
            for pipe in list(bf.state):
                bf.detach(pipe)
        fault._on_clear = clear
        self._byte_faults.append(bf)
        for pipe in self._pipes(dirs):
            bf.attach(pipe, existing=True)
            pipe.refresh()
        return self._register(fault)

    def _refresh(self, dirs: Iterable[str]) -> None:
        for pipe in self._pipes(dirs):
            pipe.refresh()
            pipe.kick()


_SCHEDULABLE = ("cut", "blackhole", "refuse", "latency", "bandwidth", "corrupt", "drop")
