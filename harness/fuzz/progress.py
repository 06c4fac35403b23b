"""What a fuzz run tells the person watching it: progress while it runs, hypothesis's statistics
after it.

Progress: a line when a run starts, every few seconds while it runs and when it ends (test
cases so far: passing, failing, and invalid ones that hypothesis gave up drawing; payloads,
board resets, rates), on the logger `micropython_hil.fuzz` at
INFO, so `pytest --log-cli-level=INFO` shows a long run live and caplog can assert on it. Where
nothing listens at INFO (pytest's default), the line is printed instead: `-s` shows it live, and
otherwise the report's captured output keeps it for a failure.

Statistics: hypothesis describes each run (phases, typical runtimes, passing and failing test
cases, events, why it stopped), but its pytest plugin collects that only around a test that is
itself `@given`; a fuzz run is a `@given` run inside a plain test. The runners hand each run's
description here (`deliver_statistics`) and the plugin takes them after the test
(`take_statistics`) for `--hypothesis-show-statistics`. This module imports nothing of
hypothesis, so the plugin can look here without loading it.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("micropython_hil.fuzz")

DEFAULT_EVERY_S = 5.0

# (what ran, hypothesis's description of the run), in order, until the plugin takes them.
_statistics: list[tuple[str, str]] = []


def deliver_statistics(what: str, text: str) -> None:
    """A finished run's statistics as hypothesis describes them (runner.py calls this)."""
    _statistics.append((what, text))


def take_statistics() -> list[tuple[str, str]]:
    """The statistics delivered since the last call, oldest first; afterwards there are none."""
    taken = _statistics[:]
    del _statistics[:]
    return taken


class Progress:
    """One fuzz run's progress lines: `what` names the run, `unit` what its examples are made of."""

    def __init__(self, what: str, unit: str = "payloads", every_s: float = DEFAULT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.unit, self.every_s, self._clock = what, unit, every_s, clock
        self.counts = {"passing": 0, "failing": 0, "invalid": 0}  # test cases, as hypothesis words them
        self.items = self.resets = 0
        self._began = self._last = clock()

    def start(self, plan: str) -> None:
        """The first line: what the run will do (examples, batch size, seed)."""
        self._began = self._last = self._clock()
        self._say(f"{self.what}: {plan}")

    def example(self, items: int, status: str, resets: int = 0) -> None:
        """One hypothesis test case done: `items` of the unit sent in it, its `status`
        ("passing", "failing", or "invalid": hypothesis ended it while drawing), and the board
        resets it took; a line if `every_s` passed since the last."""
        self.counts[status] += 1
        self.items += items
        self.resets += resets
        now = self._clock()
        if now - self._last >= self.every_s:
            self._last = now
            self._say(f"{self.what}: {self.summary(now)}")

    def finish(self, error: BaseException | None) -> None:
        """The last line: the totals, and how the run ended (its failure's class)."""
        ended = "done" if error is None else f"failed ({type(error).__name__})"
        self._say(f"{self.what}: {ended}, {self.summary(self._clock())}")

    @property
    def examples(self) -> int:
        return sum(self.counts.values())

    def summary(self, now: float) -> str:
        seconds = max(now - self._began, 1e-9)
        c = self.counts
        resets = f", {self.resets} board reset{'s' * (self.resets != 1)}" if self.resets else ""
        return (f"{self.examples} test cases ({self.examples / seconds:.1f}/s): {c['passing']} passing, "
                f"{c['failing']} failing, {c['invalid']} invalid; {self.items} {self.unit} "
                f"({self.items / seconds:.0f}/s){resets}; {seconds:.1f} s")

    @staticmethod
    def _say(line: str) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info("%s", line)
        else:
            print(line, flush=True)  # nothing listens at INFO: the terminal (-s) or the captured output
