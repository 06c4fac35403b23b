"""UnixBoard: the MicroPython unix port behind a pty, as a Board; under a Simulator, a simulated ESP32.

What makes it differ from a chip: its process can crash (reported as BoardCrashed), be
relaunched when hung, and end with a simulated chip reset, after which this board relaunches it
the way the chip reboots (the ROM's reset line, then boot.py and main.py); a reset is a relaunch.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from .board import DEFAULT_TIMEOUT, Board
from .device_code import boot_scripts
from .. import tempdirs
from ..errors import BoardCrashed, BoardError
from ..sim.protocol import RESET_EXIT_CODES, ROM_RESET_LINES
from ..sim.simulator import Simulator
from .transport import ReplTransport
from .unix_port import UnixPort

_names = itertools.count(1)


class UnixBoard(Board, kind="unix"):
    """A unix-port process on a pty, in a folder that is its flash, optionally under a Simulator."""

    port: UnixPort

    def __init__(self, transport: ReplTransport, port: UnixPort, root: Path, sim: Simulator | None = None,
                 timeout: float = DEFAULT_TIMEOUT, owns_root: bool = False):
        """Board over a started `port`; `owns_root`: close() removes the root folder too."""
        self.port = port
        self.root = root
        self.sim = sim
        self._owns_root = owns_root
        port.on_exit = self._on_process_exit
        super().__init__(transport, port.name, timeout)

    @classmethod
    def open(cls, micropython: str | None = None, root: str | Path | None = None, sim: Simulator | None = None,
             name: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> "UnixBoard":
        """A fresh unix-port board in `root` (default: a temp folder, removed at close), ready in
        the raw REPL."""
        name = name or f"unix#{next(_names)}"
        owns_root = root is None
        # An owned root is the "flash" folder inside a marked temp folder (tempdirs), so a run
        # killed before close() leaves nothing the next run does not remove; the marker sits
        # beside the flash folder, not in it, where board.ls() would show it.
        root_path = tempdirs.make_temp_dir("board") / "flash" if owns_root else Path(root)
        (root_path / "lib").mkdir(parents=True, exist_ok=True)
        port = None
        try:
            port = UnixPort(root_path, micropython=micropython, sim=sim, name=name)
            port.start()
            transport = ReplTransport(port.device, name=name, exclusive=False)
        except BaseException:
            if port is not None:
                port.close()
            if owns_root:
                tempdirs.remove(root_path.parent)
            raise
        return cls(transport, port, root_path, sim=sim, timeout=timeout, owns_root=owns_root)

    # -- the hooks -------------------------------------------------------------------------
    def interrupt(self) -> None:
        self.port.interrupt()  # Ctrl-C over a pty does not reach the unix port
        super().interrupt()

    def interrupt_at_safe_point(self) -> bool:
        return self.sim is not None and self.sim.interrupt()

    def crash_reason(self) -> BoardError | None:
        if self.port.dead:
            tail = self.console.tail()
            return BoardCrashed(self.name, f"the unix port ({self.port.binary}) exited with code "
                                f"{self.port.exit_codes[-1]}" + (f"; console tail:\n{tail}" if tail.strip()
                                                                else " before printing anything: is it MicroPython?"))
        return None

    def connection_lost(self, error: Exception) -> BoardError:
        # The reader saw the pty hang up: the process's exit may still be being handled.
        self.port.wait_settled(2.0)
        return super().connection_lost(error)

    def relaunch(self) -> bool:
        self.port.start()
        return True

    def reboot(self, hard: bool) -> bool:
        # Soft and hard alike: a new process; a new pty too if the old one was hung up.
        self.port.start()
        if self.transport.device_name != self.port.device:
            self.transport.close()
            self.transport = ReplTransport(self.port.device, name=self.name, exclusive=False)
        return False

    def repl_source(self, code: str) -> str:
        # The unix port turns each "\n" it reads from the pty into "\r", so CRLF source would
        # compile with doubled newlines (wrong line numbers); a chip's raw REPL takes CRLF as one.
        return code.replace("\r\n", "\n")

    def startup_code(self) -> str:
        return self.sim.startup_code() if self.sim is not None else ""

    def resets_recorded(self) -> int:
        return len(self.sim.resets) if self.sim is not None else 0

    def process_exits(self) -> int:
        return len(self.port.exit_codes)

    def process_exit_code(self) -> int | None:
        if not self.port.dead:
            return None
        return self.port.exit_codes[-1] if self.port.exit_codes else 0

    def chip_reset_follows(self, exits_before: int, within: float = 0.3) -> bool:
        # The simulator ends the process with a reset exit code right after the raw REPL printed
        # its end-of-run markers, so the exit may still be on its way: wait briefly for it.
        if self.sim is None:
            return False
        self.port.wait_exits(exits_before + 1, within)
        codes = self.port.exit_codes
        return len(codes) > exits_before and codes[exits_before] in RESET_EXIT_CODES

    def release(self) -> None:
        self.port.close()
        if self._owns_root:
            tempdirs.remove(self.root.parent)

    # -- the process ending on its own -------------------------------------------------------
    def _on_process_exit(self, code: int) -> None:
        """The unix-port process ended on its own (the port's watcher thread)."""
        sim = self.sim
        if sim is not None and sim.on_board_exit(code):
            # A chip reset (machine.reset, deepsleep, brown-out, watchdog): the ROM's reset line,
            # then, with firmware running, boot.py and main.py as the chip runs them (console
            # continuous); from the REPL, the REPL again and the next command says so.
            rom_line = ROM_RESET_LINES.get(code)
            if rom_line:
                self.port.write_console(rom_line.encode() + b"\r\n")
            if self.current_run is None:
                self.port.start()
                self.note_reboot(rom_line or "reset")
                return
            self.port.start(extra_args=["-c", sim.startup_code() + boot_scripts()])
            return
        if code == 0 and self.current_run is None:
            # Ctrl-D in the raw REPL: a soft reboot for mpremote-style clients.
            if sim is not None:
                sim.next_boot(cause="soft")
            self.port.write_console(b"soft reboot\r\n")
            self.port.start()
            self.port.type_input(b"\r\x01")
            # Our own transport did not ask for it (SystemExit in a command): resynchronise first.
            self.note_soft_reboot()
            return
        self.port.hangup()  # readers see EIO at once instead of waiting for a timeout
