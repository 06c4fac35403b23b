"""The fault proxy's forwarding: one `Link` per proxied connection, a `Pipe` per direction
moving bytes between two `_Leg`s (asyncio protocols), applying the faults in its `Conditions`;
the clean path hands each chunk straight to the other leg."""
from __future__ import annotations

import asyncio
import collections
import select
import socket
import struct
import time
from typing import Any, Callable, Iterable

from .conditions import DOWN, UP, ByteFault, Conditions

_EOF = None  # queue marker: forward a FIN
_QUEUE_HIGH, _QUEUE_LOW = 256 * 1024, 64 * 1024  # delayed bytes that pause / resume the reader


def close_socket(sock: socket.socket, mode: str) -> None:
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


class _ByteEdit:
    """One byte fault on one stream: where its change starts (None until the match is seen)
    and the tail of a match that may straddle two reads."""

    __slots__ = ("fault", "start", "tail", "done")

    def __init__(self, fault: ByteFault, start: int | None) -> None:
        self.fault, self.start, self.tail, self.done = fault, start, b"", False

    def span(self, base: int, data: bytes) -> tuple[int, int] | None:
        """Chunk-relative range to change in `data` (stream offsets base..), None if none;
        sets `done` once the change is complete."""
        if self.start is None:
            match = self.fault.match
            hay = self.tail + data
            i = hay.find(match)
            if i < 0:
                self.tail = hay[len(hay) - len(match) + 1:] if len(match) > 1 else b""
                return None
            self.start = base - len(self.tail) + i  # a match straddling reads is changed only from here on
        start, end = self.start, self.start + self.fault.length
        if end <= base + len(data):
            self.done = True
            if end > base:
                self.fault.hits += 1
        lo, hi = max(start, base), min(end, base + len(data))
        return (lo - base, hi - base) if lo < hi else None


def _await_answer(sock: socket.socket, spin_s: float = 100e-6) -> None:
    """Spin briefly for the peer's answer before the loop goes back to sleep: on an idle
    (virtual) machine, waking a sleeping thread costs more than a loopback round trip."""
    deadline = time.perf_counter() + spin_s
    poller = select.poll()  # poll, not select: a process with a fleet holds descriptors past 1024
    poller.register(sock, select.POLLIN)
    while time.perf_counter() < deadline:
        if poller.poll(0):
            return


class _Leg(asyncio.Protocol):
    """One socket of a proxied connection; hands what it reads to its outgoing pipe."""

    def __init__(self, link: Link, sock: socket.socket) -> None:
        self.link, self.sock = link, sock
        self.transport: asyncio.Transport | None = None
        self.out: Pipe | None = None  # the pipe reading from this leg
        self.into: Pipe | None = None  # the pipe writing to this leg
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


class Pipe:
    """One direction of one connection: applies the faults of its direction, keeps byte order.
    `offset` counts the bytes read from the sending side."""

    def __init__(self, conditions: Conditions, loop: asyncio.AbstractEventLoop, direction: str,
                 src: _Leg, dst: _Leg) -> None:
        self.conditions, self.loop = conditions, loop
        self.direction, self.src_leg, self.dst_leg = direction, src, dst
        self.dst: asyncio.Transport = dst.transport  # type: ignore[assignment]
        self.offset = 0
        self.queue: collections.deque = collections.deque()  # (deliver_at, bytes or _EOF)
        self.queued = 0
        self.last_at = 0.0  # deliveries never overtake each other
        self.tx_free = 0.0  # when the bandwidth-limited "wire" is free again
        self.timer: asyncio.TimerHandle | None = None
        self.edits: list[_ByteEdit] = []
        self.fast = True
        self.eof_sent = False
        src.out, dst.into = self, self

    # -- called by the proxy when its faults change ------------------------------------------
    def add_byte_fault(self, bf: ByteFault) -> None:
        """Apply `bf` to this stream from now on (its offsets count from `offset`)."""
        self.edits.append(_ByteEdit(bf, bf.start(self.offset)))

    def remove_byte_fault(self, bf: ByteFault) -> None:
        """Stop applying `bf` (no-op if it is done or was never added)."""
        for edit in self.edits:
            if edit.fault is bf:
                self.edits.remove(edit)
                self.refresh()
                return

    def reset_wire(self) -> None:
        """A bandwidth limit starts: the wire is free from now, not from an earlier limit's end."""
        self.tx_free = self.loop.time()

    def set_blackhole(self, on: bool) -> None:
        """Stop reading the sender and hold what is queued (on), or let both go again."""
        self.src_leg.pause("blackhole", on)
        self.update()

    def update(self) -> None:
        """Take changed conditions into account: choose the path, deliver what is now due."""
        self.refresh()
        self.kick()

    # -- forwarding -------------------------------------------------------------------------------
    def refresh(self) -> None:
        self.fast = not (self.queue or self.edits) and self.conditions.clean(self.direction)

    def feed(self, data: bytes) -> None:
        if self.edits:
            base = self.offset - len(data)
            spans = []
            for edit in list(self.edits):
                s = edit.span(base, data)
                if edit.done:
                    self.edits.remove(edit)
                    self.refresh()
                if s:
                    spans.append((edit.fault, s))
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
        c, d = self.conditions, self.direction
        if self.fast and item is _EOF:
            self.deliver_now(_EOF)
            return
        now = self.loop.time()
        pieces: Iterable = [item]
        bw = c.bandwidth(d)
        if bw and item:
            step = max(1, min(16384, int(bw / 100)))  # ~10 ms slices keep the rate smooth
            pieces = [item[i:i + step] for i in range(0, len(item), step)]
        lat = c.latency(d)
        for piece in pieces:
            at = now
            if bw and piece:
                at = self.tx_free = max(self.tx_free, now) + len(piece) / bw
            if lat:
                at += c.delay(d)
            at = self.last_at = max(at, self.last_at)
            self.queue.append((at, piece))
            self.queued += len(piece) if piece else 0
        self.fast = False
        if self.queued > _QUEUE_HIGH:
            self.src_leg.pause("queue", True)
        self.kick()

    def kick(self) -> None:
        if self.timer is None and self.queue and not self.conditions.blackholed(self.direction):
            self.timer = self.loop.call_at(self.queue[0][0], self.deliver_due)

    def deliver_due(self) -> None:
        self.timer = None
        if self.conditions.blackholed(self.direction):
            return  # held until the blackhole ends
        now = self.loop.time()
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


class Link:
    """One proxied connection: the board's socket, the upstream socket, a pipe each way.

    Made in the proxy's loop for an accepted `client` socket; dials `upstream` (a socket
    `family` address) once `conditions` let handshakes through. `on_forget(link)` is called
    when both sides are closed (possibly more than once)."""

    def __init__(self, client: socket.socket, peer: Any, conditions: Conditions, *,
                 upstream: tuple[str, int], family: int, connect_timeout: float,
                 log: Callable[[str], None], on_forget: Callable[[Link], None]) -> None:
        self.client_sock, self.peer, self.conditions = client, peer, conditions
        self.upstream, self.family, self.connect_timeout = upstream, family, connect_timeout
        self.log, self.on_forget = log, on_forget
        self.loop = asyncio.get_running_loop()
        self.upstream_sock: socket.socket | None = None
        self.legs: list[_Leg] = []
        self.pipes: list[Pipe] = []
        self.closed = False
        self.task = self.loop.create_task(self.open())

    async def open(self) -> None:
        c, loop = self.conditions, self.loop
        try:
            if not c.passable:
                await c.wait_passable()  # a blackholed network does not complete handshakes
                if _peer_gone(self.client_sock):  # the client gave up waiting: nothing to replay
                    self.log(f"{self.peer} left during the blackhole; not forwarded")
                    self.abort("fin")
                    return
            up = self.upstream_sock = socket.socket(self.family, socket.SOCK_STREAM)
            up.setblocking(False)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.wait_for(loop.sock_connect(up, self.upstream), self.connect_timeout)
            _, uleg = await loop.create_connection(lambda: _Leg(self, up), sock=up)
            _, cleg = await loop.connect_accepted_socket(lambda: _Leg(self, self.client_sock),
                                                         self.client_sock)
        except asyncio.CancelledError:
            return
        except (OSError, asyncio.TimeoutError) as e:
            self.log(f"upstream {self.upstream[0]}:{self.upstream[1]} unreachable ({e!r}); reset {self.peer}")
            self.abort("rst")
            return
        self.legs = [cleg, uleg]
        self.pipes = [Pipe(c, loop, UP, cleg, uleg), Pipe(c, loop, DOWN, uleg, cleg)]
        for pipe in self.pipes:
            for bf in c.byte_faults(pipe.direction):
                pipe.add_byte_fault(bf)
            pipe.refresh()
            pipe.src_leg.pause("blackhole", c.blackholed(pipe.direction))
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
            self.on_forget(self)

    def abort(self, mode: str) -> None:
        """Close both sides now, by RST or FIN, discarding whatever is queued."""
        self.closed = True
        self.task.cancel()
        for pipe in self.pipes:
            pipe.drop_queue()
        for sock in (self.client_sock, self.upstream_sock):
            if sock is not None and sock.fileno() >= 0:
                close_socket(sock, mode)
        for leg in self.legs:
            if leg.transport is not None:
                leg.transport.abort()  # its socket is closed already; this drops the reader
        self.on_forget(self)
