"""The record of every MQTT-SN message passing a gateway, with the checks tests make over it.

Each datagram the gateway receives ("up", client to gateway) or sends ("down") is one `SnMessage`
with its MQTT-SN details: type, client id, topic id and its kind, the topic name it stands for,
QoS (-1 included), message id, return code, durations, payload; a datagram that is not valid
MQTT-SN is recorded too, with `error` saying why. The broker-side copy of what the gateway
publishes is recorded by `Telemetry` like any MQTT traffic. Waits are woken by each new record.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import TelemetryError
from .packets import Packet, TOPIC_TYPE_NAMES, describe

UP, DOWN = "up", "down"


@dataclass(slots=True)
class SnMessage:
    """One datagram through the gateway. `type` is the MQTT-SN type's name ("PUBLISH"), or
    "MALFORMED" with `error` set; `topic` the name its topic id stands for, when known."""

    index: int
    arrival: float            # host time.time()
    direction: str            # "up": client -> gateway, "down": gateway -> client
    address: str              # the client's "host:port"
    client_id: str | None
    type: str
    packet: Packet | None
    raw: bytes
    topic: str | None = None
    error: str | None = None

    # -- the packet's fields, flattened for predicates and filters
    @property
    def topic_id(self) -> int | None:
        return self.packet.topic_id if self.packet is not None else None

    @property
    def topic_type(self) -> str | None:
        return TOPIC_TYPE_NAMES.get(self.packet.topic_type) if self.packet is not None else None

    @property
    def qos(self) -> int | None:
        return self.packet.qos if self.packet is not None else None

    @property
    def msg_id(self) -> int | None:
        return self.packet.msg_id if self.packet is not None else None

    @property
    def payload(self) -> bytes:
        return bytes(self.packet.data) if self.packet is not None else b""

    @property
    def return_code(self) -> int | None:
        return self.packet.return_code if self.packet is not None else None

    @property
    def duration(self) -> int | None:
        return self.packet.duration if self.packet is not None else None

    @property
    def dup(self) -> bool:
        return bool(self.packet and self.packet.dup)

    @property
    def retain(self) -> bool:
        return bool(self.packet and self.packet.retain)

    def json(self) -> Any:
        """The payload parsed as JSON."""
        try:
            return json.loads(self.payload)
        except ValueError as exc:
            raise TelemetryError(f"MQTT-SN message #{self.index} ({self.type}) payload is not JSON ({exc})") from None

    def to_dict(self) -> dict:
        record = {"index": self.index, "arrival": self.arrival, "direction": self.direction,
                  "address": self.address, "client_id": self.client_id, "type": self.type,
                  "raw_b64": base64.b64encode(self.raw).decode()}
        if self.packet is not None:
            record.update(topic=self.topic, topic_id=self.topic_id, topic_type=self.topic_type, qos=self.qos,
                          msg_id=self.msg_id, dup=self.dup, retain=self.retain, return_code=self.return_code,
                          duration=self.duration)
            if self.packet.data:
                try:
                    record["payload"] = self.payload.decode("utf-8")
                except UnicodeDecodeError:
                    record["payload_b64"] = base64.b64encode(self.payload).decode()
        if self.error is not None:
            record["error"] = self.error
        return record

    def __str__(self) -> str:
        arrow = "->" if self.direction == UP else "<-"
        what = self.error if self.packet is None else describe(self.packet)
        topic = f" [{self.topic}]" if self.topic is not None and self.packet is not None and self.packet.topic is None \
            else ""
        problem = f" ({self.error})" if self.error and self.packet is not None else ""
        return f"#{self.index} {self.client_id or self.address} {arrow} {what}{topic}{problem}"


Where = Callable[[SnMessage], bool] | None


class SnTraffic:
    """Every datagram through a gateway, in order, and waits and checks over them.

    Filters: a type name ("PUBLISH"), `direction` ("up" or "down"), field values as keyword
    arguments (`client_id=`, `qos=-1`, `topic=`, `topic_id=`, `topic_type="predefined"`, ...), a
    predicate `where`, and `since` (an index from `mark()`, or a message: only later ones).
    """

    def __init__(self, history: int = 20) -> None:
        self.history = history
        self._messages: list[SnMessage] = []
        self._cond = threading.Condition()
        self.started = time.time()

    def add(self, direction: str, address: tuple, client_id: str | None, packet: Packet | None, raw: bytes,
            topic: str | None = None, error: str | None = None) -> SnMessage:
        """Record one datagram (the gateway calls this)."""
        with self._cond:
            message = SnMessage(len(self._messages), time.time(), direction, f"{address[0]}:{address[1]}",
                                client_id, packet.name if packet is not None else "MALFORMED", packet, bytes(raw),
                                topic, error)
            self._messages.append(message)
            self._cond.notify_all()
            return message

    @property
    def messages(self) -> list[SnMessage]:
        with self._cond:
            return list(self._messages)

    def mark(self) -> int:
        """A position to pass as `since=`."""
        with self._cond:
            return len(self._messages)

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    @staticmethod
    def _start(since: int | SnMessage) -> int:
        return since.index + 1 if isinstance(since, SnMessage) else since

    @staticmethod
    def _accepts(message: SnMessage, type: str | None, direction: str | None, where: Where,
                 fields: dict[str, Any]) -> bool:
        if type is not None and message.type != type.upper():
            return False
        if direction is not None and message.direction != direction:
            return False
        for key, wanted in fields.items():
            if getattr(message, key) != wanted:
                return False
        if where is None:
            return True
        try:
            return bool(where(message))
        except Exception:  # noqa: BLE001 - a predicate failing on other traffic is a non-match
            return False

    def select(self, type: str | None = None, *, direction: str | None = None, where: Where = None,
               since: int | SnMessage = 0, **fields: Any) -> list[SnMessage]:
        """The recorded messages that pass the filters."""
        self._check_fields(fields)
        return [m for m in self.messages[self._start(since):] if self._accepts(m, type, direction, where, fields)]

    def collect(self, n: int, type: str | None = None, *, direction: str | None = None, where: Where = None,
                since: int | SnMessage = 0, timeout: float = 5.0, **fields: Any) -> list[SnMessage]:
        """Wait until `n` messages pass the filters; the first `n`."""
        self._check_fields(fields)
        deadline = time.monotonic() + timeout
        found: list[SnMessage] = []
        scanned = self._start(since)
        with self._cond:
            while True:
                for message in self._messages[scanned:]:
                    if self._accepts(message, type, direction, where, fields):
                        found.append(message)
                        if len(found) == n:
                            return found
                scanned = max(scanned, len(self._messages))
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        wanted = " ".join(filter(None, [type, direction, *(f"{k}={v!r}" for k, v in fields.items()),
                                        "where=..." if where else None]))
        raise self.fail(f"expected {n} MQTT-SN message(s) {wanted or '(any)'} within {timeout} s, got {len(found)}")

    def expect(self, type: str | None = None, *, direction: str | None = None, where: Where = None,
               since: int | SnMessage = 0, timeout: float = 5.0, **fields: Any) -> SnMessage:
        """The first message that passes the filters (waiting up to `timeout`)."""
        return self.collect(1, type, direction=direction, where=where, since=since, timeout=timeout, **fields)[0]

    def expect_none(self, type: str | None = None, *, direction: str | None = None, where: Where = None,
                    since: int | SnMessage = 0, within: float = 1.0, **fields: Any) -> None:
        """Fail if a message passing the filters is recorded within `within` seconds."""
        try:
            message = self.expect(type, direction=direction, where=where, since=since, timeout=within, **fields)
        except TelemetryError:
            return
        raise self.fail(f"expected no MQTT-SN {type or 'message'} but got {message}")

    @staticmethod
    def _check_fields(fields: dict[str, Any]) -> None:
        known = {"client_id", "address", "topic", "topic_id", "topic_type", "qos", "msg_id", "payload",
                 "return_code", "duration", "dup", "retain", "error"}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise TypeError(f"SnTraffic: unknown field filter {unknown[0]!r}; use one of {', '.join(sorted(known))}")

    def recent(self, n: int | None = None) -> str:
        tail = self.messages[-(n or self.history):]
        if not tail:
            return "  (no MQTT-SN traffic recorded)"
        return "\n".join(f"  +{m.arrival - self.started:8.3f}s {m}" for m in tail)

    def fail(self, what: str) -> TelemetryError:
        return TelemetryError(f"{what}\nrecent MQTT-SN traffic:\n{self.recent()}")

    def save_jsonl(self, path: Path | str) -> Path:
        """Every recorded datagram as one JSON object a line."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for message in self.messages:
                out.write(json.dumps(message.to_dict()) + "\n")
        return path
