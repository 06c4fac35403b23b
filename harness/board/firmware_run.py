"""A script running on a board in the background while the test reads its console.

The pump copies the board's output into its Console until the run ends: the raw REPL's
end-of-run markers, or, after a simulated chip reset (the board then boots main.py by itself,
with no raw-REPL framing), the end of the process.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import serial

from .console import BOOT_BANNER
from ..errors import BoardError, BoardException, BoardTimeout

if TYPE_CHECKING:
    from .board import Board


class FirmwareRun:
    """A script running on the board in the background; its output streams into the console."""

    def __init__(self, board: "Board", script: str):
        self.board = board
        self.script = script
        self.reboots = 0
        self.error: BaseException | None = None
        self._stopping = False  # stop() asked for the KeyboardInterrupt that ends the run
        self._done = threading.Event()
        self._stop = threading.Event()
        self._exits_before = len(board.port.exit_codes) if board.port is not None else 0
        self._thread = threading.Thread(target=self._pump, name=f"{board.name}-console", daemon=True)

    def _pump(self) -> None:
        """Copy console bytes until the run ends: the raw REPL's end-of-run markers, or, after a
        simulated chip reset (the board then boots main.py itself, unframed), the process's end."""
        console, transport = self.board.console, self.board.transport
        framed, section, errors = True, 0, bytearray()
        try:
            while not self._stop.is_set():
                data = transport.read_available()
                if not data:
                    if self.board.port is not None and self.board.port.dead:
                        self.error = self._end_of_boot_run() if not framed else self.board._crash_reason()
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
                    if errors or not self.board._chip_reset_follows(self._exits_before):
                        break
                    framed, section = False, 0  # the board reboots and runs main.py on its own
                    self.reboots += 1
                    self._feed(data)
            if framed and section == 2 and errors:
                text = errors.decode("utf-8", "replace")
                console.feed(text)  # the log shows the traceback where it happened
                self.error = BoardException.from_traceback(self.board.name, text)
        except (serial.SerialException, OSError, BoardError) as e:
            self.error = e if isinstance(e, BoardError) else self.board._lost(e)
        finally:
            if self._stopping and isinstance(self.error, BoardException) and \
                    self.error.exc_type == "KeyboardInterrupt":
                self.error = None  # stopped on purpose: not the firmware's failure
            self.board._needs_resync = True
            if not self._stop.is_set():
                console.end(self.error)
            self._done.set()

    def _feed(self, data: bytes) -> None:
        self.board.console.feed(data)
        if BOOT_BANNER.search(data.decode("utf-8", "replace")):
            self.reboots += 1

    def _end_of_boot_run(self) -> BoardError | None:
        """main.py, started by a simulated reboot, ended with the process: its traceback, if any."""
        self.board._restart_on_next_command = True
        code = self.board.port.exit_codes[-1] if self.board.port.exit_codes else 0
        if code == 0:
            return None
        text = self.board.console.text
        start = text.rfind("Traceback (most recent call last):")
        if start >= 0:
            return BoardException.from_traceback(self.board.name, text[start:])
        return self.board._crash_reason()

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the script to return; re-raise its exception (with the board's traceback)."""
        if not self._done.wait(timeout):
            raise BoardTimeout(self.board.name, f"{self.script} still running after {timeout:g} s; "
                               f"console tail:\n{self.board.console.tail()}")
        self.board._run = None
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 5.0) -> None:
        """Interrupt the script (KeyboardInterrupt on the board) and take the REPL back."""
        if self._done.is_set():
            self.board._run = None
            return
        self._stopping = True
        # On the simulator the shims raise the interrupt at a safe point; Ctrl-C (a signal on
        # the unix port) is the fallback for code that calls no shim, and the way on a chip.
        sim = self.board.sim
        if not (sim is not None and sim.interrupt() and self._done.wait(0.5)):
            self.board._interrupt()
            if not self._done.wait(timeout):
                self._stop.set()  # abandon the console; the next command resynchronises
                self._done.wait(1.0)
        self.board._run = None
        if not self._done.is_set():
            raise BoardTimeout(self.board.name, f"{self.script} ignored the interrupt for {timeout:g} s")
