"""Exceptions a user of the harness can meet, each naming the board, port or file at fault."""

from __future__ import annotations

import re


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class MicroPythonNotFound(HarnessError):
    """The unix-port `micropython` binary could not be found or started."""


class FirmwareError(HarnessError):
    """A firmware folder is missing, or has no main.py."""


class BoardError(HarnessError):
    """Something went wrong on or with a board; `board` names it."""

    def __init__(self, board: str, message: str):
        self.board = board
        super().__init__(f"{board}: {message}")


class BoardConnectionError(BoardError):
    """The board's port is absent, busy, or not permitted."""


class BoardTimeout(BoardError):
    """The board stopped answering within the timeout (hung or dead)."""


class BoardRebooted(BoardError):
    """The board rebooted (boot banner seen, or process restarted) while a command ran."""


class BoardCrashed(BoardError):
    """The board's process died (unix port) or its port vanished (serial)."""


_EXC_LINE = re.compile(r"^(\w+(?:\.\w+)*)(?::\s?(.*))?$")


class BoardException(BoardError):
    """A MicroPython exception raised on the board; carries the whole traceback text."""

    def __init__(self, board: str, traceback: str):
        self.traceback = traceback.rstrip("\n")
        last = self.traceback.splitlines()[-1] if self.traceback else ""
        match = _EXC_LINE.match(last.strip())
        self.exc_type = match.group(1) if match else "Exception"
        self.exc_message = (match.group(2) or "") if match else last
        super().__init__(board, f"MicroPython raised {last.strip() or 'an exception'}\n{self.traceback}")

    @staticmethod
    def from_traceback(board: str, traceback: str) -> "BoardException":
        """Pick the subclass that matches the exception type in the traceback's last line."""
        last = traceback.rstrip("\n").splitlines()[-1:] or [""]
        if last[0].startswith("MemoryError"):
            return BoardMemoryError(board, traceback)
        return BoardException(board, traceback)


class BoardMemoryError(BoardException):
    """The board ran out of heap (MicroPython MemoryError)."""


class BrokerError(HarnessError):
    """The MQTT broker could not start, was asked for something it cannot do, or refused a client."""
