"""A board's console: everything it printed, with expect() for tests and a full log."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Pattern

from ..errors import BoardException, BoardTimeout

# Lines that mean a chip (re)booted: the ESP32 ROM's reset line, or a MicroPython banner.
BOOT_BANNER = re.compile(r"^(rst:0x[0-9a-f]+|ets \w+ +\d+ \d+|MicroPython v?\S+ on \d{4}-\d\d-\d\d|soft reboot)",
                         re.MULTILINE)


class Console:
    """Text a board printed, appended by a reader, consumed by expect() in order.

    expect() searches from where the previous match ended, so a test reads the console
    like a story; `text` and `lines` always hold everything.

    Output arrives in chunks (4 KB at a time from a busy board): they are kept in a list and
    joined only when someone reads, so feeding stays linear in the output's size (a str grown
    by += is copied whole on every append).
    """

    def __init__(self, board_name: str):
        self.board_name = board_name
        # Each complete line also goes to the logger micropython_hil.board.<name>, so
        # `pytest --log-cli-level=INFO` shows the boards live and caplog can assert on them.
        self.log = logging.getLogger(f"micropython_hil.board.{board_name}")
        self._log_partial = ""
        self._joined = ""
        self._parts: list[str] = []  # fed since the last join
        self._held_cr = False  # a chunk ended in "\r": its "\n" may start the next one
        self._cursor = 0
        self._cond = threading.Condition()
        self._ended: BaseException | None = None  # why no more output will come, if so

    # -- writers -----------------------------------------------------------------------
    def feed(self, data: bytes | str) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        if not text:
            return
        with self._cond:
            if self._held_cr:
                text = "\r" + text
            self._held_cr = text.endswith("\r")
            if self._held_cr:
                text = text[:-1]
            text = text.replace("\r\n", "\n")
            self._parts.append(text)
            self._cond.notify_all()
            if self.log.isEnabledFor(logging.INFO):
                *lines, self._log_partial = (self._log_partial + text).split("\n")
                for line in lines:
                    self.log.info("%s", line)

    def note(self, line: str) -> None:
        """A line from the harness itself (marked [hil]), so the log tells its acts from the board's."""
        self.feed(f"\n[hil] {line}\n")

    def end(self, reason: BaseException | None) -> None:
        """The run that produced output stopped; `reason` says why (None: it returned)."""
        with self._cond:
            if self._held_cr:
                self._parts.append("\r")
                self._held_cr = False
            self._ended = reason if reason is not None else _Finished()
            self._cond.notify_all()

    def _all(self) -> str:
        """Everything fed so far (callers hold the lock)."""
        if self._parts:
            self._joined += "".join(self._parts)
            self._parts.clear()
        return self._joined

    def restart(self) -> None:
        """A new run begins: expect() waits for output again."""
        with self._cond:
            self._ended = None

    # -- readers -----------------------------------------------------------------------
    @property
    def text(self) -> str:
        with self._cond:
            return self._all()

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.lines[-n:])

    def expect(self, pattern: str | Pattern[str], timeout: float = 10.0) -> re.Match:
        """Wait until `pattern` (a regex) appears after the previous match; return the match.

        Fails fast with the board's traceback if the run ended with an exception, and with
        a BoardTimeout showing the console's tail if the pattern never came.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = regex.search(self._all(), self._cursor)
                if match:
                    self._cursor = match.end()
                    return match
                if self._ended is not None:
                    if isinstance(self._ended, BoardException) or not isinstance(self._ended, _Finished):
                        raise self._ended
                    raise BoardTimeout(self.board_name, f"firmware finished without printing "
                                       f"{regex.pattern!r}; console tail:\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BoardTimeout(self.board_name, f"{regex.pattern!r} not seen on the console "
                                       f"within {timeout:g} s; console tail:\n{self.tail()}")
                self._cond.wait(left)

    def read_past(self, position: int, timeout: float) -> str:
        """What was printed after `position` (a length of `text`), waiting up to `timeout` for it
        to grow; "" if nothing came. For live views that follow the console."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._all()) > position or self._ended is not None, timeout)
            return self._all()[position:]

    def skip_to_end(self) -> None:
        """Forget what was printed so far for expect() (the log keeps it)."""
        with self._cond:
            self._cursor = len(self._all())


class _Finished(Exception):
    """Marker: the run returned normally."""
