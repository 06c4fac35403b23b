"""Recorded MQTT traffic and the assertions tests make over it.

`Telemetry(broker)` records every message the broker routes (amqtt: a hook where it routes, with
the publisher's client id; mosquitto/external: a '#' subscription, client id unknown) in arrival
order, and offers checks that read like the domain: expect, collect, JSON Schema validation,
rates, sequence gaps and duplicates, last will, retained state, and publish/request to command the
device. A failing check raises `TelemetryError` (an AssertionError) that shows the recent traffic.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import jsonschema

from ..errors import BoardException, MqttError, TelemetryError
from .board_clock import BoardClock
from .broker import Broker
from .client import MqttClient
from .topics import topic_matches

# Every recorded message, as `pytest --log-cli-level=INFO` shows it live (caplog can assert on it).
log = logging.getLogger("micropython_hil.telemetry")

Where = Callable[["Message"], bool] | dict | None


@dataclass(slots=True)
class Message:
    """One routed message. `board_time_us` is the board's clock when known (the simulator fills it)."""

    index: int
    arrival: float  # host time.time() when the broker routed it
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    client_id: str | None
    board_time_us: int | None = None

    @property
    def text(self) -> str:
        """The payload as text (invalid UTF-8 shown with replacement characters)."""
        return self.payload.decode("utf-8", "replace")

    def json(self) -> Any:
        """The payload parsed as JSON; a clear error names the topic when it is not JSON."""
        try:
            return json.loads(self.payload)
        except ValueError as exc:
            raise TelemetryError(f"message #{self.index} on {self.topic!r} is not JSON ({exc}): {self.text[:120]!r}") from None

    def to_dict(self) -> dict:
        """A JSON-able record; payloads that are not UTF-8 are kept whole as base64."""
        record = {"index": self.index, "arrival": self.arrival, "topic": self.topic, "qos": self.qos,
                  "retain": self.retain, "dup": self.dup, "client_id": self.client_id,
                  "board_time_us": self.board_time_us}
        try:
            record["payload"] = self.payload.decode("utf-8")
        except UnicodeDecodeError:
            record["payload_b64"] = base64.b64encode(self.payload).decode()
        return record

    def __str__(self) -> str:
        flags = ("R" if self.retain else "") + ("D" if self.dup else "")
        body = self.text if len(self.payload) <= 100 else f"{self.text[:100]}... ({len(self.payload)} bytes)"
        return f"#{self.index} {self.client_id or '?'} -> {self.topic} q{self.qos}{flags and ' ' + flags} {body!r}"


def _schema(schema: dict | str | Path) -> dict:
    if isinstance(schema, dict):
        return schema
    try:
        return json.loads(Path(schema).read_text())
    except (OSError, ValueError) as exc:
        raise TelemetryError(f"cannot read JSON Schema {schema}: {exc}") from None


def _may_match_under(topic_filter: str, prefix: str) -> bool:
    """Can `topic_filter` match a topic under `prefix/` (a device's topics)?"""
    levels, fixed = topic_filter.split("/"), prefix.split("/")
    for i, want in enumerate(fixed):
        if i >= len(levels):
            return False
        if levels[i] == "#":
            return True
        if levels[i] not in ("+", want):
            return False
    return len(levels) > len(fixed)


class Telemetry:
    """The recorder: every routed message since it started (or since `clear`), and the checks."""

    def __init__(self, broker: Broker, history: int = 15) -> None:
        self.broker = broker
        self.history = history
        self._messages: list[Message] = []
        self._cond = threading.Condition()
        self._client: MqttClient | None = None
        self.started = time.time()
        self._board_clocks: list[BoardClock] = []
        self._runs: dict[str, tuple[Any, str, tuple]] = {}  # board -> (run, prefix, topics): see watch
        broker.add_listener(self._record)

    def _record(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool, client_id: str | None) -> None:
        with self._cond:
            self._messages.append(Message(len(self._messages), time.time(), topic, payload, qos, retain, dup, client_id))
            self._cond.notify_all()
        if log.isEnabledFor(logging.INFO):
            log.info("%s q%d%s %s", topic, qos, " retained" if retain else "",
                     payload[:200].decode("utf-8", "replace"))

    def watch(self, run: Any, prefix: str, topics: Iterable[str] = ()) -> None:
        """Fail waits at once when this firmware run (a FirmwareRun) ends with an exception: a
        firmware that crashed sends nothing more, and a wait for its messages would only run out
        its timeout. Only waits that can match the device's topics (under `prefix`, or one of
        `topics`: its own topic scheme) fail so, with the firmware's own error and traceback; the run replaces an earlier one on the same board (a
        firmware started again after a crash is waited for anew). expect_none and
        expect_last_will keep waiting: after a crash, silence and the last will are the point."""
        with self._cond:
            self._runs[run.board.name] = (run, prefix, tuple(topics))
        run.on_end(self._wake)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _crashed(self, topic_filter: str) -> BaseException | None:
        """The exception a watched run ended with, if one did and `topic_filter` can match its
        device's topics (callers hold the lock)."""
        for run, prefix, topics in self._runs.values():
            if run.running or not isinstance(run.error, BoardException):
                continue
            if _may_match_under(topic_filter, prefix) or any(topic_matches(topic_filter, t) for t in topics):
                return run.error
        return None

    def attach_board_clock(self, source: Any, client_id: str | None = None) -> None:
        """Take board times from a simulator's record of each PUBLISH the board wrote (topic and
        board_time_us, in order): the k-th message recorded on a topic from `client_id` gets the
        board time of the k-th publish on that topic. `source` is the Simulator (waits for a
        board time are then woken by its reports) or its `publishes` list."""
        self._board_clocks.append(BoardClock(source, client_id))

    def stamp_board_times(self) -> None:
        """Fill `board_time_us` of recorded messages from the attached board clocks (idempotent).

        A QoS 1 retransmission the broker dropped as a duplicate would shift the pairing of
        later messages on that topic; outages that cause retransmissions are rare within a test.
        """
        with self._cond:
            for clock in self._board_clocks:
                sent = clock.sent()
                seen: dict[str, int] = {}
                for m in self._messages:
                    if not clock.covers(m):
                        continue
                    if m.topic not in sent:
                        continue
                    k = seen.get(m.topic, 0)
                    seen[m.topic] = k + 1
                    if k < len(sent[m.topic]) and m.board_time_us is None:
                        m.board_time_us = sent[m.topic][k]

    def await_board_times(self, messages: Iterable[Message], timeout: float = 2.0) -> None:
        """Stamp these messages with their board time, waiting briefly where it has not come
        yet: the simulator's record of a publish travels its control channel while the message
        travels the broker. Returns at once when no board clock is attached."""
        messages = list(messages)
        deadline = time.monotonic() + timeout
        self.stamp_board_times()
        for clock in list(self._board_clocks):
            self._await_stamps(clock, [m for m in messages if clock.covers(m)], deadline - time.monotonic())

    def _await_stamps(self, clock: BoardClock, messages: list[Message], timeout: float) -> None:
        """Wait until `messages` carry board times, restamping each time the clock's record grows."""
        stamped_at = -1  # the record's length when last stamped: none yet

        def all_stamped() -> bool:
            nonlocal stamped_at
            if len(clock.publishes) != stamped_at:
                stamped_at = len(clock.publishes)
                self.stamp_board_times()
            return all(m.board_time_us is not None for m in messages)

        clock.wait_until(all_stamped, max(0.0, timeout))

    def _why_no_board_time(self, message: Message) -> str:
        """What to do about a message no attached board clock times, naming the client ids."""
        attached = [c.client_id for c in self._board_clocks if c.client_id is not None]
        if not self._board_clocks:
            return "no board clock is attached (a simulated board started by start_firmware attaches one); " \
                   "pass time_field= to read the time from the payload"
        if message.client_id is not None and attached and message.client_id not in attached:
            return (f"it was published by client id {message.client_id!r}, but the board clock is attached for "
                    f"{', '.join(repr(c) for c in attached)}: the firmware connects with its own id. Pass "
                    f"client_id={message.client_id!r} to start_firmware, or let start_firmware write the id "
                    "into the firmware's config (files=, placeholder {client_id}); or pass time_field=")
        return "the simulator recorded no PUBLISH for it on this topic; pass time_field= to read it from the payload"

    def close(self) -> None:
        """Stop recording and close the command client."""
        self.broker.remove_listener(self._record)
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> "Telemetry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    @property
    def messages(self) -> list[Message]:
        with self._cond:
            return list(self._messages)

    def mark(self) -> int:
        """A position to pass as `since=`: only messages recorded after this call count."""
        with self._cond:
            return len(self._messages)

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def select(self, topic_filter: str = "#", where: Where = None, since: int | Message = 0) -> list[Message]:
        """Recorded messages on a topic filter that satisfy `where`, from `since` on."""
        start = since.index + 1 if isinstance(since, Message) else since
        return [m for m in self.messages[start:] if self._accepts(m, topic_filter, where)]

    @staticmethod
    def _accepts(message: Message, topic_filter: str, where: Where) -> bool:
        if not topic_matches(topic_filter, message.topic):
            return False
        if where is None:
            return True
        try:
            if isinstance(where, dict):  # a subset of the JSON payload
                data = json.loads(message.payload)
                return isinstance(data, dict) and all(data.get(k, object()) == v for k, v in where.items())
            return bool(where(message))
        except Exception:  # noqa: BLE001 - a predicate failing on other traffic is a non-match
            return False

    def recent(self, n: int | None = None) -> str:
        """The last messages, one a line, for failure reports."""
        tail = self.messages[-(n or self.history):]
        if not tail:
            return "  (no traffic recorded)"
        return "\n".join(f"  +{m.arrival - self.started:8.3f}s {m}" for m in tail)

    def fail(self, what: str) -> TelemetryError:
        return TelemetryError(f"{what}\nrecent traffic on {self.broker.kind} {self.broker.host}:{self.broker.port}:\n"
                              f"{self.recent()}")

    # ------------------------------------------------------------------ waiting
    def collect(self, n: int, topic_filter: str = "#", where: Where = None, timeout: float = 5.0,
                since: int | Message = 0) -> list[Message]:
        """Wait until `n` matching messages have been recorded; return the first `n`. Fails at
        once with the firmware's error when a device whose topics the filter covers crashed."""
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        return self._collect(n, topic_filter, where, timeout, since, crash_fails=True)

    def _collect(self, n: int, topic_filter: str, where: Where, timeout: float, since: int | Message,
                 crash_fails: bool) -> list[Message]:
        __tracebackhide__ = True
        start = since.index + 1 if isinstance(since, Message) else since
        deadline = time.monotonic() + timeout
        found: list[Message] = []
        scanned = start
        with self._cond:
            while True:
                for message in self._messages[scanned:]:
                    if self._accepts(message, topic_filter, where):
                        found.append(message)
                        if len(found) == n:
                            return found
                scanned = max(scanned, len(self._messages))
                crash = self._crashed(topic_filter) if crash_fails else None
                if crash is not None:
                    raise crash
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        cond = f" where {where!r}" if where is not None else ""
        raise self.fail(f"expected {n} message(s) on {topic_filter!r}{cond} within {timeout} s, got {len(found)}")

    def expect(self, topic_filter: str = "#", where: Where = None, timeout: float = 5.0,
               since: int | Message = 0, schema: dict | str | Path | None = None) -> Message:
        """The first matching message (waiting up to `timeout`); with `schema`, it must validate."""
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        message = self.collect(1, topic_filter, where, timeout, since)[0]
        if schema is not None:
            self.validate([message], schema)
        return message

    def expect_none(self, topic_filter: str = "#", where: Where = None, within: float = 1.0,
                    since: int | Message = 0) -> None:
        """Fail if a matching message arrives within `within` seconds."""
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        try:
            message = self._collect(1, topic_filter, where, within, since, crash_fails=False)[0]
        except TelemetryError:
            return
        raise self.fail(f"expected no message on {topic_filter!r} but got {message}")

    # ------------------------------------------------------------------ content
    def validate(self, messages: Iterable[Message] | str, schema: dict | str | Path, min_count: int = 1) -> list[Message]:
        """Every message (or every recorded one on a topic filter) is JSON valid against `schema`."""
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        batch = self.select(messages) if isinstance(messages, str) else list(messages)
        if len(batch) < min_count:
            raise self.fail(f"expected at least {min_count} message(s) to validate, got {len(batch)}")
        validator = jsonschema.Draft202012Validator(_schema(schema))
        for message in batch:
            errors = sorted(validator.iter_errors(message.json()), key=lambda e: list(e.path))
            if errors:
                where = "/".join(str(p) for p in errors[0].path) or "(root)"
                raise self.fail(f"message {message} fails its schema at {where}: {errors[0].message}")
        return batch

    def assert_rate(self, topic_filter: str, every: float, tolerance: float = 0.2, clock: str = "arrival",
                    min_count: int = 3, since: int | Message = 0, time_field: str | None = None,
                    time_unit: float = 1e-3) -> list[float]:
        """Consecutive messages are `every` seconds apart, each interval within +-tolerance (a fraction).

        clock="arrival" uses host arrival times; clock="board" uses `board_time_us`, or the JSON
        payload's `time_field` times `time_unit` seconds (default milliseconds) when given.
        Returns the intervals in seconds.
        """
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        if clock not in ("arrival", "board"):
            raise ValueError(f"assert_rate: clock must be 'arrival' or 'board', not {clock!r}")
        batch = self.select(topic_filter, since=since)
        if len(batch) < min_count:
            raise self.fail(f"assert_rate: need at least {min_count} messages on {topic_filter!r}, got {len(batch)}")

        if clock == "board" and time_field is None:
            self.await_board_times(batch)

        def stamp(m: Message) -> float:
            if clock == "arrival":
                return m.arrival
            if time_field is not None:
                return float(m.json()[time_field]) * time_unit
            if m.board_time_us is None:
                raise self.fail(f"assert_rate(clock='board'): message {m} has no board time; "
                                f"{self._why_no_board_time(m)}")
            return m.board_time_us / 1e6

        times = [stamp(m) for m in batch]
        intervals = [b - a for a, b in zip(times, times[1:])]
        low, high = every * (1 - tolerance), every * (1 + tolerance)
        bad = [(i, x) for i, x in enumerate(intervals) if not low <= x <= high]
        if bad:
            shown = ", ".join(f"{batch[i].index}->{batch[i + 1].index}: {x:.3f}s" for i, x in bad[:5])
            raise self.fail(f"{topic_filter!r} should arrive every {every}s +-{tolerance:.0%} ({clock} clock); "
                            f"{len(bad)} of {len(intervals)} intervals off (median {statistics.median(intervals):.3f}s): "
                            f"{shown}")
        return intervals

    def sequence(self, topic_filter: str, field: str = "seq", since: int | Message = 0) -> dict:
        """Gaps and duplicates of a counter field: {'values', 'gaps': [(a, b)], 'duplicates': [v]}."""
        values = [m.json()[field] for m in self.select(topic_filter, since=since)]
        seen: set = set()
        duplicates = [v for v in values if v in seen or seen.add(v)]
        ordered = sorted(seen)
        gaps = [(a, b) for a, b in zip(ordered, ordered[1:]) if b - a > 1]
        return {"values": values, "gaps": gaps, "duplicates": duplicates}

    def assert_sequence(self, topic_filter: str, field: str = "seq", min_count: int = 1,
                        since: int | Message = 0) -> list:
        """The counter field has no gaps and no duplicates; returns the values seen."""
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        report = self.sequence(topic_filter, field, since)
        if len(report["values"]) < min_count:
            raise self.fail(f"expected at least {min_count} message(s) on {topic_filter!r}, got {len(report['values'])}")
        problems = []
        if report["gaps"]:
            problems.append("missing " + ", ".join(f"{a + 1}..{b - 1}" if b - a > 2 else str(a + 1)
                                                   for a, b in report["gaps"]))
        if report["duplicates"]:
            problems.append(f"duplicated {sorted(set(report['duplicates']))}")
        if problems:
            raise self.fail(f"{field!r} on {topic_filter!r} is not a clean sequence: {'; '.join(problems)}")
        return report["values"]

    # ------------------------------------------------------------------ broker state
    def retained(self, topic_filter: str = "#") -> dict[str, bytes]:
        """The broker's retained messages on a filter: {topic: payload}."""
        return {topic: payload for topic, (payload, _qos) in self.broker.retained(topic_filter).items()}

    def assert_retained(self, topic: str, payload: bytes | str | dict | None = None) -> bytes:
        """A retained message exists on `topic` (with this payload, or JSON subset for a dict)."""
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        found = self.retained(topic).get(topic)
        if found is None:
            raise self.fail(f"expected a retained message on {topic!r}, the broker holds none")
        if payload is not None and not self._payload_is(found, payload):
            raise self.fail(f"retained message on {topic!r} is {found[:200]!r}, expected {payload!r}")
        return found

    def assert_not_retained(self, topic: str) -> None:
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        found = self.retained(topic).get(topic)
        if found is not None:
            raise self.fail(f"expected no retained message on {topic!r}, found {found[:200]!r}")

    @staticmethod
    def _payload_is(actual: bytes, wanted: bytes | str | dict) -> bool:
        if isinstance(wanted, dict):
            try:
                data = json.loads(actual)
            except ValueError:
                return False
            return isinstance(data, dict) and all(data.get(k, object()) == v for k, v in wanted.items())
        return actual == (wanted.encode() if isinstance(wanted, str) else wanted)

    def expect_last_will(self, topic: str, payload: bytes | str | dict | None = None, timeout: float = 10.0,
                         retained: bool | None = None, since: int | Message = 0) -> Message:
        """The device's last will arrives on `topic` (the broker published it for a dead client).

        Give `retained=True` to also require the will to be kept as the topic's retained state.
        """
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        where = None if payload is None else (lambda m: self._payload_is(m.payload, payload))
        message = self._collect(1, topic, where, timeout, since, crash_fails=False)[0]
        if retained:
            self.assert_retained(topic, payload)
        return message

    # ------------------------------------------------------------------ commanding the device
    def _commander(self) -> MqttClient:
        if self._client is None or not self._client.connected:
            self._client = self.broker.client(client_id=f"hil-telemetry-{secrets.token_hex(3)}")
        return self._client

    def publish(self, topic: str, payload: bytes | str | dict | list = b"", qos: int = 1, retain: bool = False) -> None:
        """Send a message to the device (dicts and lists as JSON)."""
        data = json.dumps(payload).encode() if isinstance(payload, (dict, list)) else payload
        try:
            self._commander().publish(topic, data, qos=qos, retain=retain)
        except (OSError, MqttError):
            # the broker restarted or dropped us since the last command: one fresh connection
            self._client.close(disconnect=False)
            self._client = None
            self._commander().publish(topic, data, qos=qos, retain=retain)

    def request(self, topic: str, payload: bytes | str | dict | list, reply_topic: str, where: Where = None,
                timeout: float = 5.0, qos: int = 1) -> Message:
        """Publish a command and wait for the device's reply on `reply_topic`."""
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        since = self.mark()
        self.publish(topic, payload, qos=qos)
        return self.expect(reply_topic, where=where, timeout=timeout, since=since)

    # ------------------------------------------------------------------ saving
    def save_jsonl(self, path: Path | str) -> Path:
        """Write every recorded message as one JSON object a line."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.stamp_board_times()
        with path.open("w") as out:
            for message in self.messages:
                out.write(json.dumps(message.to_dict()) + "\n")
        return path
