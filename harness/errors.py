"""Every exception the harness raises, in two families.

- `HarnessError`: the harness could not do what was asked (a board absent or hung, a bad
  option, a broker that would not start). Each message is one line naming the board, port,
  file or option at fault, and says what to do.
- `CheckFailed` (an AssertionError): the firmware under test failed a check the test made
  (telemetry, hot-loop budget, fuzzing, differential). pytest reports these as test failures.
"""

from __future__ import annotations

import re
import textwrap


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class HarnessWarning(UserWarning):
    """The harness had to step in (a board reset to stop firmware that ignored the interrupt, a
    package fallback); the run goes on."""


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
    """A MicroPython exception raised on the board; carries the whole traceback text and what the
    code printed before it (`output`), as a chip's console shows them."""

    def __init__(self, board: str, traceback: str, output: str = ""):
        self.traceback = traceback.rstrip("\n")
        self.output = output
        last = self.traceback.splitlines()[-1] if self.traceback else ""
        match = _EXC_LINE.match(last.strip())
        self.exc_type = match.group(1) if match else "Exception"
        self.exc_message = (match.group(2) or "") if match else last
        printed = f"printed before it:\n{output.rstrip()}\n" if output.strip() else ""
        super().__init__(board, f"MicroPython raised {last.strip() or 'an exception'}\n{printed}{self.traceback}")

    @staticmethod
    def from_traceback(board: str, traceback: str, output: str = "") -> "BoardException":
        """Pick the subclass that matches the exception type in the traceback's last line."""
        last = traceback.rstrip("\n").splitlines()[-1:] or [""]
        if last[0].startswith("MemoryError"):
            return BoardMemoryError(board, traceback, output)
        return BoardException(board, traceback, output)


class BoardMemoryError(BoardException):
    """The board ran out of heap (MicroPython MemoryError)."""


class BrokerError(HarnessError):
    """The MQTT broker could not start, was asked for something it cannot do, or refused a client."""


class MqttError(BrokerError):
    """The harness's own MQTT client was refused, timed out or lost its connection."""


class SimulatorError(HarnessError, ValueError):
    """Bad use of the simulator (unknown part or profile, pin the chip lacks, value out of range)."""


class ProfileError(SimulatorError):
    """A board profile is unknown or malformed, or the chip lacks what was asked of it."""


class PackageError(HarnessError):
    """A MicroPython package could not be found, fetched or installed."""


class CloudError(HarnessError):
    """The HTTP endpoint could not start, or a test's wait for a request timed out."""


class NetFaultError(HarnessError, RuntimeError):
    """A fault that cannot be applied in the proxy's current state (message says what to do)."""


class BenchError(HarnessError):
    """A benchmark could not run or its result cannot be judged (bad name, crash, wrong baseline)."""


# -- the firmware failed a check -------------------------------------------------------------
class CheckFailed(AssertionError):
    """Base of the failures that mean the firmware, not the harness, did something wrong."""


class SyncTimeout(CheckFailed):
    """A board (or the test) did not reach a barrier, or a shared value was not set, in time."""


class TelemetryError(CheckFailed):
    """A telemetry check failed; the message ends with the recent traffic."""


class BenchBudgetExceeded(CheckFailed):
    """A hot loop went over its time or allocation budget, or regressed against a baseline."""


class DifferenceFound(CheckFailed):
    """The board and the CPython reference disagree on a payload."""

    def __init__(self, payload: bytes, board: tuple, host: tuple, function: str):
        self.payload, self.board, self.host = payload, board, host
        super().__init__(f"first difference on payload {payload!r}: board {function} -> {board!r}, "
                         f"CPython reference -> {host!r}")


class FuzzFailure(CheckFailed):
    """A payload made the firmware misbehave; carries the exact payload and a regression test."""

    kind = "misbehaved"

    def __init__(self, payload: bytes, problem: str, batch: list[bytes] | None = None,
                 firmware: str | None = None, console: str = ""):
        self.payload, self.problem, self.batch, self.firmware = payload, problem, batch or [payload], firmware
        shown = repr(payload) if len(payload) <= 300 else f"{payload[:300]!r}... (exact bytes in the test below)"
        lines = [f"firmware {self.kind} on payload {shown} ({len(payload)} bytes): {problem}"]
        if len(self.batch) > 1:
            where = (f"payload {self.batch.index(payload) + 1} of a batch of {len(self.batch)}"
                     if payload in self.batch else f"after a batch of {len(self.batch)}")
            lines.append(f"({where}, all in the test below)")
        if console.strip():
            lines += ["console tail:", textwrap.indent(console.rstrip()[-2000:], "  ")]
        lines += ["regression test (paste into a scenario file):", textwrap.indent(self.regression_test(), "  ")]
        super().__init__("\n".join(lines))

    def regression_test(self) -> str:
        """A pytest test that replays this batch through the `fuzzer` fixture."""
        name = f"test_fuzz_regression_{abs(hash(self.payload)) % 10**8:08d}"
        marker = f"@pytest.mark.firmware({self.firmware!r})\n" if self.firmware else ""
        return (f"import pytest\n\n\n{marker}def {name}(fuzzer):\n"
                f"    fuzzer.check({self.batch!r})\n")


class FuzzCrash(FuzzFailure):
    """The firmware died (traceback, process exit) while handling the payload."""
    kind = "crashed"


class FuzzHang(FuzzFailure):
    """The firmware stopped answering (no reply, not even to the liveness ping) after the payload."""
    kind = "hung"


class FuzzWrongReply(FuzzFailure):
    """The reply contradicts the contract: ok for an invalid command, an error for a valid one, no effect."""
    kind = "answered wrongly"


class FuzzBadReply(FuzzFailure):
    """The reply itself is malformed: not UTF-8 JSON, or not valid against the reply schema."""
    kind = "sent a malformed reply"
