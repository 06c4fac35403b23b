"""The fault proxy's forwarding: one `_Link` per proxied connection, a `_Pipe` per direction
moving bytes between two `_Leg`s (asyncio protocols), applying the proxy's active faults; the
clean path hands each chunk straight to the other leg."""
from __future__ import annotations

import asyncio
import collections
import select
import socket
import struct
import time
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from .proxy import Fault, FaultProxy

UP, DOWN = "up", "down"
_EOF = None  # queue marker: forward a FIN
_QUEUE_HIGH, _QUEUE_LOW = 256 * 1024, 64 * 1024  # delayed bytes that pause / resume the reader


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


def _await_answer(sock: socket.socket, spin_s: float = 100e-6) -> None:
    """Spin briefly for the peer's answer before the loop goes back to sleep: on an idle
    (virtual) machine, waking a sleeping thread costs more than a loopback round trip."""
    deadline = time.perf_counter() + spin_s
    while time.perf_counter() < deadline:
        if select.select((sock,), (), (), 0)[0]:
            return


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
            _await_answer(out.dst_leg.sock)
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
