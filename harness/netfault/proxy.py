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
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from ..errors import NetFaultError
from .conditions import DOWN, UP, ByteFault, Conditions, directions
from .pipes import Link, Pipe, close_socket


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


class Fault:
    """A fault in force on a proxy; ends with clear() or at the end of its `with` block."""

    def __init__(self, proxy: FaultProxy, kind: str, detail: str, on_clear: Callable[[], None],
                 on_enter: Callable[[], None] | None = None, byte_fault: ByteFault | None = None) -> None:
        self.proxy, self.kind, self.detail = proxy, kind, detail
        self.active = on_enter is None  # a cut is instantaneous unless held open by `with`
        self.directions: tuple[str, ...] = byte_fault.directions if byte_fault else (UP, DOWN)
        self._on_clear, self._on_enter = on_clear, on_enter
        self._byte_fault = byte_fault

    @property
    def hits(self) -> int:
        """Byte faults: connections whose stream was changed (0 for other faults)."""
        return self._byte_fault.hits if self._byte_fault is not None else 0

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
        self._conditions = Conditions(seed)  # seeded: jitter is the same on every run
        self._links: list[Link] = []
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
        self._conditions.start()
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
                close_socket(sock, self._cutting)
                continue
            self._links.append(Link(sock, peer, self._conditions, upstream=self.upstream,
                                    family=self._upstream_family, connect_timeout=self.connect_timeout,
                                    log=self._log, on_forget=self._forget))

    def _forget(self, link: Link) -> None:
        """A connection closed: keep its byte counts."""
        if link in self._links:
            self._links.remove(link)
            for pipe in link.pipes:
                self._closed_bytes[pipe.direction] += pipe.offset

    # -- stats --------------------------------------------------------------------------------
    def links(self) -> list[Link]:
        """The connections open now (accepted, forwarded or still dialing), oldest first; their
        sockets and pipes belong to the proxy's thread: inspect them, do not drive them."""
        return self._call(lambda: list(self._links))

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

    def _pipes(self, dirs: Iterable[str]) -> list[Pipe]:
        return [p for link in self._links for p in link.pipes if p.direction in dirs]

    def _conflict(self, kind: str, current: Callable[[str], Any], dirs: tuple[str, ...]) -> None:
        busy = [d for d in dirs if current(d)]
        if busy:
            raise NetFaultError(f"netfault {self!r}: {kind} already set on direction {busy[0]!r}; "
                                "clear() it (or leave its with-block) before setting another")

    def _latency_fault(self, ms: float, jitter_ms: float = 0.0, direction: str = "both") -> Fault:
        dirs = directions(direction)
        if ms < 0 or jitter_ms < 0 or (ms == 0 and jitter_ms == 0):
            raise ValueError(f"netfault latency: ms={ms} jitter_ms={jitter_ms}: give values >= 0, not both zero")
        self._conflict("latency", self._conditions.latency, dirs)
        self._conditions.set_latency(dirs, (ms / 1000.0, jitter_ms / 1000.0))

        def clear() -> None:
            self._conditions.set_latency(dirs, None)
            self._refresh(dirs)
        self._refresh(dirs)
        return self._register(Fault(self, "latency", f"{ms}+-{jitter_ms} ms {direction}", clear))

    def _bandwidth_fault(self, bytes_per_s: float, direction: str = "both") -> Fault:
        dirs = directions(direction)
        if not isinstance(bytes_per_s, (int, float)) or bytes_per_s <= 0:
            raise ValueError(f"netfault bandwidth: {bytes_per_s!r} bytes/s must be above zero")
        self._conflict("bandwidth", self._conditions.bandwidth, dirs)
        self._conditions.set_bandwidth(dirs, float(bytes_per_s))
        for pipe in self._pipes(dirs):
            pipe.reset_wire()

        def clear() -> None:
            self._conditions.set_bandwidth(dirs, None)
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
        dirs = directions(direction)
        self._conflict("blackhole", self._conditions.blackholed, dirs)
        self._set_blackhole(dirs, True)
        return self._register(Fault(self, "blackhole", direction, lambda: self._set_blackhole(dirs, False)))

    def _set_blackhole(self, dirs: tuple[str, ...], on: bool) -> None:
        self._conditions.set_blackhole(dirs, on)
        for pipe in self._pipes(dirs):
            pipe.set_blackhole(on)

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
        dirs = directions(direction)
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
        bf = ByteFault(drop, dirs, at, after, bytes(match) if match else None, length, xor)

        def clear() -> None:
            self._conditions.remove_byte_fault(bf)
            for pipe in self._pipes(dirs):
                pipe.remove_byte_fault(bf)
        fault = Fault(self, name, f"{length} B {where} {direction}", clear, byte_fault=bf)
        self._conditions.add_byte_fault(bf)
        for pipe in self._pipes(dirs):
            pipe.add_byte_fault(bf)
            pipe.refresh()
        return self._register(fault)

    def _refresh(self, dirs: Iterable[str]) -> None:
        for pipe in self._pipes(dirs):
            pipe.update()


_SCHEDULABLE = ("cut", "blackhole", "refuse", "latency", "bandwidth", "corrupt", "drop")
