"""Per-board telemetry for a fleet: one broker listener hands each message to the board it
belongs to, whose own `Telemetry` records it.

A recorder per board (rather than one for the whole fleet, filtered per question) keeps every
check proportional to one board's traffic: 200 boards at 1 Hz for a minute is 12,000 messages,
and a board's rate, sequence or board-time stamping then reads its own 60. Each board's
Telemetry is the ordinary one (expect, collect, assert_rate, assert_sequence, validate,
publish, ...), built over a `_BoardBroker`, which gives it the real broker for everything but
recording.

A message belongs to the board whose client id published it (amqtt names the publisher) or,
failing that (mosquitto and external brokers name none; the broker's own wills; commands the
test sends to a board), to the board whose client id is one of the topic's levels
("hil/weather-f1-17/telemetry", "stations/weather-f1-17/reading").
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ..mqtt.listener import Listener
from ..mqtt.telemetry import Telemetry


class TelemetryRouter:
    """Routes a broker's messages to per-client-id recorders; counts them for fleet-wide waits."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self._listeners: dict[str, Listener] = {}
        self.changed = threading.Condition()  # notified after each routed message
        self.routed = 0
        self.unrouted = 0
        self._touched: set[str] = set()
        broker.add_listener(self._route)

    def telemetry(self, client_id: str) -> Telemetry:
        """A Telemetry that records only what belongs to `client_id`."""
        return Telemetry(_BoardBroker(self, client_id))

    def _route(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool, client_id: str | None) -> None:
        owner = client_id if client_id in self._listeners else None
        if owner is None:
            owner = next((level for level in topic.split("/") if level in self._listeners), None)
        with self.changed:
            listener = self._listeners.get(owner) if owner is not None else None
            if listener is None:
                self.unrouted += 1
            else:
                self.routed += 1
                self._touched.add(owner)
                listener(topic, payload, qos, retain, dup, client_id)
            self.changed.notify_all()

    def take_touched(self) -> set[str]:
        """The client ids that got messages since the last call (and forget them)."""
        with self.changed:
            touched, self._touched = self._touched, set()
            return touched

    def wait_touched(self, timeout: float) -> bool:
        """Wait until some client id got a message since take_touched(); False at the timeout."""
        with self.changed:
            return self.changed.wait_for(lambda: bool(self._touched), timeout)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds, re-checked after each routed message."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def attach(self, client_id: str, listener: Listener) -> None:
        self._listeners[client_id] = listener

    def detach(self, client_id: str, listener: Listener) -> None:
        if self._listeners.get(client_id) == listener:
            del self._listeners[client_id]

    def close(self) -> None:
        self.broker.remove_listener(self._route)


class _BoardBroker:
    """The broker as one board's Telemetry sees it: recording attaches to the router under the
    board's client id; everything else (host, port, kind, client(), retained()) is the broker's."""

    def __init__(self, router: TelemetryRouter, client_id: str) -> None:
        self._router = router
        self._client_id = client_id

    def add_listener(self, listener: Listener) -> None:
        self._router.attach(self._client_id, listener)

    def remove_listener(self, listener: Listener) -> None:
        self._router.detach(self._client_id, listener)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._router.broker, name)
