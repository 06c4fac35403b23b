"""What the fault proxy's faults do to traffic right now, per direction: latency and jitter,
bandwidth, blackhole, and the byte faults each stream meets. The proxy's fault methods set
these; the forwarding pipes read them. Only the proxy's thread touches a `Conditions`.

"up" is board -> upstream, "down" is upstream -> board.
"""
from __future__ import annotations

import asyncio
import random

UP, DOWN = "up", "down"
_DIRECTIONS = {"up": (UP,), "down": (DOWN,), "both": (UP, DOWN)}


def directions(direction: str) -> tuple[str, ...]:
    """The directions a fault's `direction` argument names: 'up', 'down' or 'both'."""
    try:
        return _DIRECTIONS[direction]
    except (KeyError, TypeError):
        raise ValueError(f"netfault: direction {direction!r} is not one of 'up', 'down', 'both'") from None


class ByteFault:
    """Drop or corrupt `length` bytes of each connection's stream once: at stream offset `at`,
    `after` more bytes than the stream had passed when the fault was set, or where `match`
    first appears. `hits` counts the streams it changed."""

    def __init__(self, drop: bool, dirs: tuple[str, ...], at: int | None, after: int | None,
                 match: bytes | None, length: int, xor: int) -> None:
        self.drop, self.directions, self.at, self.after = drop, dirs, at, after
        self.match, self.length, self.xor = match, length, xor
        self.hits = 0

    def start(self, offset: int) -> int | None:
        """Stream offset of the first byte to change, for a stream `offset` bytes in; None
        until `match` is seen."""
        if self.match is not None:
            return None
        if self.at is not None:
            return self.at
        return offset + self.after


class Conditions:
    """The faults in force on one proxy, as its pipes read them; jitter comes from a random
    generator seeded with `seed`, so it is the same on every run."""

    def __init__(self, seed: int = 0) -> None:
        self._random = random.Random(seed)
        self._latency: dict[str, tuple[float, float] | None] = {UP: None, DOWN: None}
        self._bandwidth: dict[str, float | None] = {UP: None, DOWN: None}
        self._blackhole = {UP: False, DOWN: False}
        self._byte_faults: list[ByteFault] = []
        self._passable: asyncio.Event | None = None

    def start(self) -> None:
        """Call in the proxy's thread when its loop starts: new connections wait on an event
        of that loop while a blackhole is set."""
        self._passable = asyncio.Event()
        self._passable.set()

    # -- read by the pipes ---------------------------------------------------------------------
    def latency(self, direction: str) -> tuple[float, float] | None:
        """(delay s, jitter s) added to `direction`, or None."""
        return self._latency[direction]

    def bandwidth(self, direction: str) -> float | None:
        """Bytes per second `direction` is limited to, or None."""
        return self._bandwidth[direction]

    def blackholed(self, direction: str) -> bool:
        return self._blackhole[direction]

    def clean(self, direction: str) -> bool:
        """No latency, bandwidth limit or blackhole on `direction` (byte faults aside)."""
        return not (self._latency[direction] or self._bandwidth[direction] or self._blackhole[direction])

    def delay(self, direction: str) -> float:
        """Seconds the latency adds to the next piece sent `direction`, jitter drawn; 0 without
        latency (no draw then, so the jitter sequence depends only on the delayed pieces)."""
        lat = self._latency[direction]
        if not lat:
            return 0.0
        return max(0.0, lat[0] + self._random.uniform(-lat[1], lat[1]))

    def byte_faults(self, direction: str) -> list[ByteFault]:
        """The byte faults a new stream going `direction` meets, oldest first."""
        return [bf for bf in self._byte_faults if direction in bf.directions]

    @property
    def passable(self) -> bool:
        """False while any direction is blackholed."""
        return self._passable.is_set()

    async def wait_passable(self) -> None:
        await self._passable.wait()

    # -- set by the proxy's faults --------------------------------------------------------------
    def set_latency(self, dirs: tuple[str, ...], value: tuple[float, float] | None) -> None:
        for d in dirs:
            self._latency[d] = value

    def set_bandwidth(self, dirs: tuple[str, ...], bytes_per_s: float | None) -> None:
        for d in dirs:
            self._bandwidth[d] = bytes_per_s

    def set_blackhole(self, dirs: tuple[str, ...], on: bool) -> None:
        for d in dirs:
            self._blackhole[d] = on
        if any(self._blackhole.values()):
            self._passable.clear()
        else:
            self._passable.set()

    def add_byte_fault(self, bf: ByteFault) -> None:
        self._byte_faults.append(bf)

    def remove_byte_fault(self, bf: ByteFault) -> None:
        self._byte_faults.remove(bf)
