"""A script running on a board in the background while the test reads its console.

The pump copies the board's output into its Console until the run ends: the raw REPL's
end-of-run markers, or, after a simulated chip reset (the board then boots main.py by itself,
with no raw-REPL framing), the end of the process.

A run knows its board only through `RunHost`, the few questions and notices below; Board
(board.py) provides them, so this module does not depend on the board layer above it.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Protocol

import serial

from .console import BOOT_BANNER, Console
from ..errors import BoardError, BoardException, BoardTimeout
from .transport import ReplTransport


class RunHost(Protocol):
    """What a FirmwareRun needs from the board it runs on.

    The questions about the board's process answer "there is none" on a chip: 0 exits, no exit
    code, no chip reset to follow.
    """

    name: str
    console: Console
    transport: ReplTransport

    def interrupt(self) -> None:
        """KeyboardInterrupt in whatever runs (Ctrl-C; on the unix port, SIGINT too)."""

    def interrupt_at_safe_point(self) -> bool:
        """Ask for a KeyboardInterrupt at the firmware's next simulator call; False if nothing can."""

    def crash_reason(self) -> BoardError | None:
        """Why the board is gone (its process died), or None while it is there."""

    def connection_lost(self, error: Exception) -> BoardError:
        """The error to report when reading the board's port failed with `error`."""

    def process_exits(self) -> int:
        """How many times the board's process has ended so far."""

    def process_exit_code(self) -> int | None:
        """The exit code of the board's process if it ended and nothing relaunched it, else None."""

    def chip_reset_follows(self, exits_before: int) -> bool:
        """After a run ended cleanly: is the process ending in a (simulated) chip reset?"""

    def run_ended(self, run: "FirmwareRun", process_ended: bool) -> None:
        """The pump stopped: the REPL needs resynchronising; with `process_ended`, a new process."""

    def run_collected(self, run: "FirmwareRun") -> None:
        """The test took the run's outcome (wait/stop): the REPL is the board's again."""

    def force_stop(self, run: "FirmwareRun", why: str) -> None:
        """The run ignored its interrupt: reset the board so the next command works, saying `why`."""


class FirmwareRun:
    """A script running on the board in the background; its output streams into the console."""

    def __init__(self, board: RunHost, script: str):
        self.board = board
        self.script = script
        self.reboots = 0
        self.error: BaseException | None = None
        self._stopping = False  # stop() asked for the KeyboardInterrupt that ends the run
        self._process_ended = False  # main.py, booted by a simulated reset, ended with the process
        self._done = threading.Event()
        self._stop = threading.Event()
        self._exits_before = board.process_exits()
        self._thread = threading.Thread(target=self._pump, name=f"{board.name}-console", daemon=True)
        self._end_listeners: list[Callable[[], None]] = []

    # -- driven by the board -------------------------------------------------------------
    def start(self) -> None:
        """Start copying the console (the board has just sent the script to its REPL)."""
        self._thread.start()

    def abandon(self) -> None:
        """Stop copying the console without waiting for the script: the board is being reset
        or closed. The console is not ended (a reset keeps it going)."""
        self._stop.set()

    def on_end(self, listener: Callable[[], None]) -> None:
        """Call `listener` (no arguments) when the run ends, at once if it has: telemetry waits
        use it to stop waiting for a firmware that crashed."""
        self._end_listeners.append(listener)
        if self._done.is_set():
            listener()

    def wait_done(self, timeout: float | None = None) -> bool:
        """Wait for the pump to stop; False if it still runs after `timeout` s."""
        return self._done.wait(timeout)

    # -- the pump ----------------------------------------------------------------------
    def _pump(self) -> None:
        """Copy console bytes until the run ends: the raw REPL's end-of-run markers, or, after a
        simulated chip reset (the board then boots main.py itself, unframed), the process's end."""
        board = self.board
        console, transport = board.console, board.transport
        framed, section, errors = True, 0, bytearray()
        try:
            while not self._stop.is_set():
                data = transport.read_available()
                if not data:
                    code = board.process_exit_code()
                    if code is not None:
                        self.error = self._end_of_boot_run(code) if not framed else board.crash_reason()
                        break
                    continue
                if not framed:
                    self._feed(data)
                    continue
                while data and section < 2:
                    head, eot, data = data.partition(b"\x04")
                    if section == 0:
                        self._feed(head)
                    else:
                        errors += head
                    if eot:
                        section += 1
                if section == 2:
                    if errors or not board.chip_reset_follows(self._exits_before):
                        break
                    framed, section = False, 0  # the board reboots and runs main.py on its own
                    self.reboots += 1
                    self._feed(data)
            if framed and section == 2 and errors:
                text = errors.decode("utf-8", "replace")
                console.feed(text)  # the log shows the traceback where it happened
                self.error = BoardException.from_traceback(board.name, text)
        except (serial.SerialException, OSError, BoardError) as e:
            self.error = e if isinstance(e, BoardError) else board.connection_lost(e)
        finally:
            if self._stopping and isinstance(self.error, BoardException) and \
                    self.error.exc_type == "KeyboardInterrupt":
                self.error = None  # stopped on purpose: not the firmware's failure
            board.run_ended(self, process_ended=self._process_ended)
            if not self._stop.is_set():
                console.end(self.error)
            self._done.set()
            for listener in list(self._end_listeners):
                listener()

    def _feed(self, data: bytes) -> None:
        self.board.console.feed(data)
        if BOOT_BANNER.search(data.decode("utf-8", "replace")):
            self.reboots += 1

    def _end_of_boot_run(self, code: int) -> BoardError | None:
        """main.py, started by a simulated reboot, ended with the process: its traceback, if any."""
        self._process_ended = True
        if code == 0:
            return None
        text = self.board.console.text
        start = text.rfind("Traceback (most recent call last):")
        if start >= 0:
            return BoardException.from_traceback(self.board.name, text[start:])
        return self.board.crash_reason()

    # -- the test's side -----------------------------------------------------------------
    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the script to return; re-raise its exception (with the board's traceback)."""
        if not self._done.wait(timeout):
            raise BoardTimeout(self.board.name, f"{self.script} still running after {timeout:g} s; "
                               f"console tail:\n{self.board.console.tail()}")
        self.board.run_collected(self)
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 5.0) -> None:
        """Interrupt the script (KeyboardInterrupt on the board) and take the REPL back.

        Firmware that swallows the interrupt (a bare `except:` around its loop) is stopped the
        way a person at the bench would: the board is reset (the unix port relaunched, a chip's
        EN pulsed), a HarnessWarning says so in one line, and the next command works."""
        if self._done.is_set():
            self.board.run_collected(self)
            return
        self._stopping = True
        # Marked, so the KeyboardInterrupt traceback that follows in the log reads as the
        # harness's act (a test's teardown, say), not as the firmware crashing.
        self.board.console.note(f"stopping {self.script}: KeyboardInterrupt from the harness")
        # On the simulator the shims raise the interrupt at a safe point; Ctrl-C (a signal on
        # the unix port) is the fallback for code that calls no shim, and the way on a chip.
        # Asked again every second: a board between two processes (a simulated deep-sleep
        # wake, say) misses an interrupt sent while it relaunches.
        deadline = time.monotonic() + timeout
        while not (self.board.interrupt_at_safe_point() and self._done.wait(0.5)):
            self.board.interrupt()
            left = deadline - time.monotonic()
            if self._done.wait(max(0.0, min(1.0, left))):
                break
            if left <= 1.0:
                self.abandon()  # the console is the reset's now
                self._done.wait(1.0)
                self.board.force_stop(self, f"{self.script} ignored KeyboardInterrupt for {timeout:g} s")
                return
        self.board.run_collected(self)
