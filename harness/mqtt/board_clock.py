"""A simulated board's clock for recorded messages: its record of each PUBLISH it wrote.

The simulator records every PUBLISH the firmware writes (topic and board_time_us, in order).
That record travels the simulator's control channel while the message itself travels the
broker, so a message may be recorded before its board time is known: `wait_until` waits for
the record to catch up.
"""

from __future__ import annotations

import time
from typing import Any, Callable


class BoardClock:
    """One board's PUBLISH record, and whose messages it times.

    `source` is the Simulator (`.publishes`, and `.wait_until`, which is woken each time the
    board reports something) or the `publishes` list itself (which announces nothing).
    """

    def __init__(self, source: Any, client_id: str | None = None) -> None:
        self.client_id = client_id
        if hasattr(source, "wait_until"):
            self.publishes: list = source.publishes
            self._wait_until: Callable[[Callable[[], bool], float], bool] | None = source.wait_until
        else:
            self.publishes = source
            self._wait_until = None

    def covers(self, message: Any) -> bool:
        """Whether `message` may be one of this board's (the publisher's id unknown counts)."""
        return self.client_id is None or message.client_id in (self.client_id, None)

    def sent(self) -> dict[str, list[int]]:
        """The board times of the PUBLISHes recorded so far, per topic, in order."""
        times: dict[str, list[int]] = {}
        for publish in list(self.publishes):
            times.setdefault(publish.topic, []).append(publish.board_time_us)
        return times

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds, re-checked as the record grows; its last value."""
        if self._wait_until is not None:
            return self._wait_until(predicate, timeout)
        # Polled: a bare list announces nothing when the simulator appends to it.
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True
