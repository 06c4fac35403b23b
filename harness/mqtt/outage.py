"""One-line expectations about a device living through an outage.

    with Outage(telemetry, device, sim=sim) as outage:
        netfault.blackhole()          # or broker.restart(...), sim.wifi.drop(...), netfault.cut()
        ...
    outage.assert_last_will()                     # "offline" while it was gone
    outage.assert_back_online(within=30)          # "online" again, within 30 s (board time if simulated)
    outage.assert_resubscribed(command, reply)    # a command sent now is answered
    outage.assert_no_loss("telemetry")            # the counter field has no gap and no duplicate

The outage is the `with` block (or start()/end()). Times are the host's, except where the board's
clock is virtual: then "within" is measured on the board's clock, from the simulator's record
of when each MQTT publish left the board.
"""

from __future__ import annotations

import time
from typing import Any

from .telemetry import Message, Telemetry, Where
from ..errors import TelemetryError


class Outage:
    """An outage of one device's link, and the checks of how it came back."""

    def __init__(self, telemetry: Telemetry, device: Any, sim: Any = None,
                 status_topic: str = "status", online: bytes = b"online", offline: bytes = b"offline"):
        self.telemetry = telemetry
        self.device = device
        self.sim = sim if sim is not None else getattr(device.board, "sim", None)
        self.status_topic = device.topic(status_topic)
        self.online, self.offline = online, offline
        self.start_mark: int | None = None
        self.end_mark: int | None = None
        self.end_host: float | None = None
        self.end_board_us: int | None = None

    def start(self) -> "Outage":
        self.start_mark = self.telemetry.mark()
        return self

    def end(self) -> "Outage":
        """The fault is over: from here the device must find its way back."""
        self.end_mark = self.telemetry.mark()
        self.end_host = time.time()  # the clock telemetry stamps arrivals with
        if self.sim is not None and self.sim.time_mode != "real":  # a virtual clock: measure on it
            self.end_board_us = self.sim.board_time_us
        return self

    def __enter__(self) -> "Outage":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.end()

    def _since_start(self) -> int:
        if self.start_mark is None:
            raise TelemetryError("Outage: start() it (or use it as a `with` block) before checking")
        return self.start_mark

    def _since_end(self) -> int:
        if self.end_mark is None:
            raise TelemetryError("Outage: end() it (leave the `with` block) before checking recovery")
        return self.end_mark

    def assert_last_will(self, timeout: float = 0.0) -> Message:
        """The broker published the device's last will ("offline") during the outage."""
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        return self.telemetry.expect(self.status_topic, where=lambda m: m.payload == self.offline,
                                     since=self._since_start(), timeout=timeout)

    def assert_back_online(self, within: float = 30.0, timeout: float | None = None) -> float:
        """"online" came back after the outage, within `within` seconds; returns how long it took.

        `timeout` (host seconds, default `within` plus a margin) bounds the wait itself.
        """
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        since = self._since_end()
        message = self.telemetry.expect(self.status_topic, where=lambda m: m.payload == self.online,
                                        since=since, timeout=timeout if timeout is not None else within + 10)
        took = self._board_seconds_to(message) if self.end_board_us is not None else message.arrival - self._host_end()
        if took > within:
            clock = "board" if self.end_board_us is not None else "host"
            raise self.telemetry.fail(f"{self.device.client_id} came back online {took:.1f} s ({clock} clock) "
                                      f"after the outage; expected within {within} s")
        return took

    def _host_end(self) -> float:
        return self.end_host or 0.0

    def _board_seconds_to(self, message: Message) -> float:
        """Board seconds from the outage's end to the board publishing `message`."""

        def first_publish():
            return next((p for p in list(self.sim.publishes)
                         if p.topic == message.topic and p.board_time_us >= self.end_board_us), None)

        # Its record travels the control channel, not the broker: wait for the simulator to report it.
        self.sim.wait_until(lambda: first_publish() is not None, timeout=2.0)
        publish = first_publish()
        if publish is None:
            raise self.telemetry.fail(f"the simulator saw no publish on {message.topic!r} after the outage")
        return (publish.board_time_us - self.end_board_us) / 1e6

    def assert_resubscribed(self, command: Any, reply_topic: str, where: Where = None,
                            command_topic: str = "cmd", timeout: float = 10.0) -> Message:
        """A command sent after the outage is answered: the device subscribed again."""
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        self._since_end()
        return self.telemetry.request(self.device.topic(command_topic), command, self.device.topic(reply_topic),
                                      where=where, timeout=timeout)

    def assert_no_loss(self, topic: str, field: str = "seq", min_after: int = 1, in_flight: int = 1,
                       timeout: float = 30.0) -> list:
        """Messages on the topic carry a counter with no gap across the outage, at least
        `min_after` arrived after it, and nothing is duplicated beyond what QoS 1 allows: a
        message in flight when the link died (its PUBACK lost) may arrive twice, so up to
        `in_flight` values first seen before the outage ended may repeat."""
        __tracebackhide__ = True  # a failure shows the test's line, not the harness's
        full = self.device.topic(topic)
        self.telemetry.collect(min_after, full, since=self._since_end(), timeout=timeout)
        report = self.telemetry.sequence(full, field=field)
        if report["gaps"]:
            self.telemetry.assert_sequence(full, field=field)  # fails, naming what is missing
        end = self._since_end()
        before = {m.json()[field] for m in self.telemetry.select(full) if m.index < end}
        repeated = sorted(set(report["duplicates"]))
        beyond = [v for v in repeated if v not in before]
        if beyond or len(repeated) > in_flight:
            raise self.telemetry.fail(f"{field!r} on {full!r}: duplicated {repeated}, beyond the "
                                      f"{in_flight} message(s) QoS 1 may repeat after an outage")
        return report["values"]
