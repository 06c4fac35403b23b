"""Board: one API over a MicroPython unix-port process and an ESP32 on a serial port.

Everything above the transport is the same code for both: exec/eval, files, deploy,
reset, running the firmware in the background while the test reads its console.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import serial

from . import unix_port
from .console import Console
from ..errors import (BoardConnectionError, BoardCrashed, BoardError, BoardRebooted, BoardTimeout,
                     FirmwareError)
from .firmware_run import FirmwareRun
from .spec import BoardSpec
from ..sim.protocol import RESET_EXIT_CODES, ROM_RESET_LINES
from .transport import ReplTransport, find_esp32_port

DEFAULT_TIMEOUT = 10.0
# Bytes per write command when uploading: big enough that raw-paste flow control, not
# round trips, sets the pace; small enough for a 110 KB heap.
UPLOAD_CHUNK = 4096
_names = itertools.count(1)

# Runs a script the way the chip runs main.py at boot: __name__ == "__main__", and
# tracebacks that name the file.
_RUN_SCRIPT = "exec(compile(open({path!r}).read(), {path!r}, 'exec'), {{'__name__': '__main__'}})"


def _board_path(path: str) -> str:
    """Board paths are relative to the board's root (cwd): '/lib/x.py' and 'lib/x.py' agree."""
    path = path.replace("\\", "/").strip("/")
    return path


@dataclass
class DeployReport:
    """What deploy() did: files written and files skipped because their hash matched."""
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0


class Board:
    """A MicroPython board the test drives: a unix-port process or a chip on a serial port."""

    def __init__(self, transport: ReplTransport, name: str, kind: str,
                 port: unix_port.UnixPort | None = None, sim: Any = None,
                 timeout: float = DEFAULT_TIMEOUT, cleanup: Callable[[], None] | None = None):
        self.transport = transport
        self.name = name
        self.kind = kind  # "unix" or "serial"
        self.port = port
        self.sim = sim
        self.timeout = timeout
        self.console = Console(name)
        self._run: FirmwareRun | None = None
        self._needs_resync = False
        self._restart_on_next_command = False  # a boot run (after a simulated reset) ended the process
        self._rebooted: str | None = None  # a simulated reset happened outside a firmware run
        self._cleanup = cleanup
        self._closed = False

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def unix(cls, micropython: str | None = None, root: str | Path | None = None, sim: Any = None,
             name: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> "Board":
        """A fresh unix-port board in a temp folder (its flash), ready in the raw REPL."""
        name = name or f"unix#{next(_names)}"
        owned_root = root is None
        root_path = Path(tempfile.mkdtemp(prefix="hil-board-")) if owned_root else Path(root)
        (root_path / "lib").mkdir(parents=True, exist_ok=True)
        port = None
        try:
            port = unix_port.UnixPort(root_path, micropython=micropython, name=name,
                                      args=sim.launch_args() if sim else (),
                                      env=_unix_env(root_path, sim))
            port.start()
            transport = ReplTransport(port.device, name=name, exclusive=False)
        except BaseException:
            if port is not None:
                port.close()
            if owned_root:
                shutil.rmtree(root_path, ignore_errors=True)
            raise

        def cleanup() -> None:
            port.close()
            if owned_root:
                shutil.rmtree(root_path, ignore_errors=True)

        board = cls(transport, name, "unix", port=port, sim=sim, timeout=timeout, cleanup=cleanup)
        board.root = root_path
        port.on_exit = board._on_process_exit
        return board._ready_or_closed()

    @classmethod
    def serial(cls, device: str, name: str | None = None, baudrate: int = 115200,
               timeout: float = DEFAULT_TIMEOUT, reset: bool = False) -> "Board":
        """A board on a serial port (`auto`, a device path, or an rfc2217:// URL)."""
        if device == "auto":
            device = find_esp32_port()
        name = name or f"serial:{device}"
        transport = ReplTransport(device, name=name, baudrate=baudrate, reset_on_open=reset)
        return cls(transport, name, "serial", timeout=timeout)._ready_or_closed()

    def _ready_or_closed(self) -> "Board":
        """In the raw REPL and ready, or closed (nothing left open) and the error raised."""
        try:
            self._enter_repl()
        except BaseException:
            self.close()
            raise
        return self

    # -- REPL ----------------------------------------------------------------------------
    def _interrupt(self) -> None:
        if self.port is not None:
            self.port.interrupt()  # Ctrl-C over a pty does not reach the unix port
        try:
            self.transport.serial.write(b"\r\x03\x03")
        except (serial.SerialException, OSError):
            pass

    def _enter_repl(self, soft_reset: bool = False) -> None:
        self._check_alive()
        try:
            self.transport.enter_repl(soft_reset=soft_reset, timeout=self.timeout)
        except BoardTimeout:
            if self._crash_reason() is not None:
                raise self._crash_reason() from None
            if self.port is not None:  # hung in code that ignores Ctrl-C: a restart, as a chip's reset
                self.port.start(env=_unix_env(self.root, self.sim))
                self.transport.enter_repl(soft_reset=False, timeout=self.timeout)
            else:
                raise
        self._needs_resync = False

    def _crash_reason(self) -> BoardCrashed | None:
        if self.port is not None and self.port.dead:
            return BoardCrashed(self.name, f"micropython process exited with code {self.port.exit_codes[-1]}; "
                                f"console tail:\n{self.console.tail()}")
        return None

    def _check_alive(self) -> None:
        reason = self._crash_reason()
        if reason is not None:
            raise reason

    def _lost(self, error: Exception) -> BoardError:
        """Why the port failed: a unix-port process that died (its exit may still be being
        handled when the reader sees the pty hang up), else a lost serial connection."""
        if self.port is not None:
            deadline = time.monotonic() + 2.0
            while not self.port.alive and not self.port.dead and time.monotonic() < deadline:
                time.sleep(0.005)
        return self._crash_reason() or BoardConnectionError(self.name, f"lost the board's port: {error}")

    def _on_process_exit(self, code: int) -> None:
        """The unix-port process ended on its own (watcher thread)."""
        if self.sim is not None and self.sim.on_board_exit(code):
            # A chip reset (machine.reset, deepsleep, brown-out, watchdog): the ROM's reset line,
            # then, with firmware running, boot.py and main.py as the chip runs them (console
            # continuous); from the REPL, the REPL again and the next command says so.
            rom_line = ROM_RESET_LINES.get(code)
            if rom_line:
                self.port.write_console(rom_line.encode() + b"\r\n")
            if self._run is None:
                self._rebooted = rom_line or "reset"
                self._needs_resync = True
                self.port.start(env=_unix_env(self.root, self.sim))
                return
            boot = self.sim.startup_code() + _boot_code()
            self.port.start(extra_args=["-c", boot], env=_unix_env(self.root, self.sim))
            return
        if code == 0 and self._run is None:
            # Ctrl-D in the raw REPL: a soft reboot for mpremote-style clients.
            if self.sim is not None:
                self.sim.next_boot(cause="soft")
            self.port.write_console(b"soft reboot\r\n")
            self.port.start()
            self.port.type_input(b"\r\x01")
            return
        self.port.hangup()  # readers see EIO at once instead of waiting for a timeout

    def _chip_reset_follows(self, exits_before: int, within: float = 0.3) -> bool:
        """After a run ended without error on a simulated board: is the process ending in a chip
        reset (deep sleep, machine.reset, ...)? The simulator ends the process with a reset exit
        code right after the raw REPL printed its end-of-run markers, so wait briefly for it."""
        if self.port is None or self.sim is None:
            return False
        deadline = time.monotonic() + within
        while len(self.port.exit_codes) <= exits_before and time.monotonic() < deadline:
            time.sleep(0.002)
        codes = self.port.exit_codes
        return len(codes) > exits_before and codes[exits_before] in RESET_EXIT_CODES

    def exec(self, code: str, timeout: float | None = None) -> str:
        """Run code on the board; its printed output, or the board's exception raised here."""
        self._ready_for_command()
        resets_before = len(self.sim.resets) if self.sim is not None else 0
        try:
            out = self.transport.run(code, timeout=timeout or self.timeout)
        except (BoardTimeout, BoardConnectionError) as e:
            self._needs_resync = True
            self._interrupt()
            crash = self._crash_reason()
            if crash is not None:
                raise crash from None
            self._raise_if_rebooted("while running a command")
            raise e from None
        except BoardRebooted:
            self._needs_resync = True
            raise
        if self.sim is not None and len(self.sim.resets) > resets_before:
            # The command reset the simulated chip (machine.reset(), deepsleep(), ...): the
            # process ends right after its output; wait for the relaunch and say so.
            deadline = time.monotonic() + self.timeout
            while self._rebooted is None and time.monotonic() < deadline:
                time.sleep(0.002)
            self._raise_if_rebooted("during the command")
        return out.decode("utf-8", "replace").replace("\r\n", "\n")  # chips send CRLF

    def _raise_if_rebooted(self, when: str) -> None:
        """A simulated reset outside a firmware run: take the new REPL and raise BoardRebooted."""
        if self._rebooted is None:
            return
        line, self._rebooted = self._rebooted, None
        self._enter_repl()
        raise BoardRebooted(self.name, f"the board reset {when} ({line}); its REPL is back, "
                            "state in RAM is gone")

    def eval(self, expr: str, timeout: float | None = None) -> Any:
        """Evaluate an expression on the board; its value, rebuilt from repr() on the host."""
        text = self.exec(f"print(repr({expr}))", timeout=timeout).strip()
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise BoardError(self.name, f"eval({expr!r}) returned {text[:80]!r}, which is not a "
                             "Python literal; use exec() and parse its output") from None

    def _ready_for_command(self) -> None:
        if self._closed:
            raise BoardError(self.name, "board is closed")
        if self._run is not None and self._run.running:
            raise BoardError(self.name, f"{self._run.script} is running and owns the REPL; "
                             "call run.stop() (or board.stop()) first")
        self._run = None
        self._raise_if_rebooted("after the last command")
        if self._restart_on_next_command and self.port is not None:
            # The process ended with main.py (run after a simulated reset): a fresh REPL, as a
            # chip's would be there.
            self._restart_on_next_command = False
            self.port.start(env=_unix_env(self.root, self.sim))
            self._enter_repl()
        if self._needs_resync:
            self._enter_repl()

    # -- files ---------------------------------------------------------------------------
    def put_bytes(self, data: bytes, remote: str) -> None:
        """Write bytes to a file on the board (parent folders must exist: see mkdir)."""
        path = _board_path(remote)
        self.exec(f"_f=open({path!r},'wb')")
        try:
            view = memoryview(data)
            for start in range(0, len(data), UPLOAD_CHUNK):
                self.exec(f"_f.write({bytes(view[start:start + UPLOAD_CHUNK])!r})")
        finally:
            self.exec("_f.close()\ndel _f")

    def put(self, local: str | Path, remote: str | None = None) -> None:
        """Copy a host file to the board (default: same name at the root)."""
        local = Path(local)
        self.put_bytes(local.read_bytes(), remote or local.name)

    def get(self, remote: str) -> bytes:
        """Read a file from the board."""
        path = _board_path(remote)
        text = self.exec(f"import binascii\nwith open({path!r},'rb') as _f:\n while 1:\n"
                         f"  _b=_f.read({UPLOAD_CHUNK // 2})\n  if not _b: break\n"
                         f"  print(binascii.hexlify(_b).decode())")
        return bytes.fromhex("".join(text.split()))

    def ls(self, path: str = "") -> list[str]:
        """Names in a folder of the board's filesystem."""
        return sorted(self.eval(f"__import__('os').listdir({_board_path(path) or '.'!r})"))

    def exists(self, path: str) -> bool:
        code = f"import os\ntry:\n os.stat({_board_path(path)!r})\n print(1)\nexcept OSError:\n print(0)"
        return self.exec(code).strip() == "1"

    def mkdir(self, path: str) -> None:
        """Create a folder and its parents (no error if it exists)."""
        self.exec(_MKDIRS + f"_mkdirs({_board_path(path)!r})")

    def rm(self, path: str, recursive: bool = False) -> None:
        """Remove a file, or a folder (with recursive=True, everything in it)."""
        self.exec(_RMTREE + f"_rm({_board_path(path)!r},{recursive!r})")

    def deploy(self, folder: str | Path, dest: str = "", force: bool = False) -> DeployReport:
        """Copy a firmware folder onto the board, skipping files whose SHA-256 already matches."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FirmwareError(f"firmware folder {folder} does not exist")
        files = {(Path(dest) / p.relative_to(folder)).as_posix(): p
                 for p in sorted(folder.rglob("*")) if p.is_file() and not _ignored(p)}
        report = DeployReport()
        on_board = {} if force else self._hashes(files)
        dirs = sorted({str(Path(r).parent) for r in files if str(Path(r).parent) not in ("", ".")})
        if dirs:
            self.exec(_MKDIRS + "".join(f"_mkdirs({d!r})\n" for d in dirs))
        for remote, local in files.items():
            data = local.read_bytes()
            if on_board.get(remote) == hashlib.sha256(data).hexdigest():
                report.skipped.append(remote)
                continue
            self.put_bytes(data, remote)
            report.uploaded.append(remote)
            report.bytes_uploaded += len(data)
        return report

    def _hashes(self, remotes: Iterable[str]) -> dict[str, str]:
        """SHA-256 of each named file on the board (absent files left out), in one round trip."""
        names = list(remotes)
        if not names:
            return {}
        self.exec(_HASHER)
        return self.eval(f"_hh({names!r})", timeout=max(self.timeout, 30))

    # -- running firmware ----------------------------------------------------------------
    def run(self, script: str = "main.py") -> FirmwareRun:
        """Start a script (main.py by default) in the background; read it through `console`."""
        self._ready_for_command()
        run = FirmwareRun(self, script)
        self.console.restart()
        # On a simulated board the shims connect first, so even `import utime` reaches them and
        # the inputs the test set so far arrive in one boot record, before the firmware's heap fills.
        prologue = self.sim.startup_code() if self.sim is not None else ""
        self.transport.start(prologue + _RUN_SCRIPT.format(path=_board_path(script)))
        self._run = run
        run._thread.start()
        return run

    def stop(self) -> None:
        """Stop the running firmware, if any."""
        if self._run is not None:
            self._run.stop()

    # -- reset ---------------------------------------------------------------------------
    def reset(self, hard: bool = False) -> None:
        """Reset the board and take its REPL back. Unix port: a restart (soft and hard alike)."""
        if self._run is not None:
            self._run._stop.set()
            self._interrupt()
            self._run._done.wait(5)
            self._run = None
        if self.port is not None:
            self.port.start(env=_unix_env(self.root, self.sim))
            if self.transport.device_name != self.port.device:
                self.transport.close()
                self.transport = ReplTransport(self.port.device, name=self.name, exclusive=False)
            self._enter_repl()
        elif hard:
            self.transport.hard_reset()
            self._enter_repl()
        else:
            self._enter_repl(soft_reset=True)

    # -- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the firmware, release the port, kill the process: safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._run is not None:
            self._run._stop.set()
            self._interrupt()
            self._run._done.wait(2)
        try:
            self.transport.close()
        except (serial.SerialException, OSError):
            pass
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Board {self.name}>"


def open_board(spec: "BoardSpec | str", micropython: str | None = None, sim: Any = None,
               timeout: float = DEFAULT_TIMEOUT) -> Board:
    """Open a board from a `--board` spec: `unix`, `unix:PROFILE`, `serial:PORT`, `serial:auto`."""
    spec = spec if isinstance(spec, BoardSpec) else BoardSpec.parse(spec)
    if spec.kind == "unix":
        return Board.unix(micropython=micropython, sim=sim, timeout=timeout)
    return Board.serial(spec.port, timeout=timeout)


def _unix_env(root: Path, sim: Any) -> dict[str, str]:
    path = [".frozen", *(sim.micropypath() if sim else []), str(root / "lib")]
    env = {"MICROPYPATH": ":".join(path)}
    if sim is not None:
        env.update(sim.env())
    return env


def _boot_code() -> str:
    """What the unix port runs after a simulated chip reset: boot.py then main.py, as the chip does."""
    lines = ["import os"]
    for script in ("boot.py", "main.py"):
        lines += [f"if {script!r} in os.listdir():", " " + _RUN_SCRIPT.format(path=script)]
    return "\n".join(lines) + "\n"


def _ignored(path: Path) -> bool:
    return "__pycache__" in path.parts or path.name.startswith(".") or path.suffix == ".pyc"


_MKDIRS = """\
def _mkdirs(p):
 import os
 q = ''
 for part in p.split('/'):
  q = q + '/' + part if q else part
  try: os.mkdir(q)
  except OSError: pass
"""

_RMTREE = """\
def _rm(p, rec):
 import os
 if os.stat(p)[0] & 0x4000:
  if rec:
   for n in os.listdir(p): _rm(p + '/' + n, True)
  os.rmdir(p)
 else:
  os.remove(p)
"""

_HASHER = """\
def _hh(names):
 import hashlib, binascii
 out = {}
 buf = bytearray(1024)
 for n in names:
  try: f = open(n, 'rb')
  except OSError: continue
  h = hashlib.sha256()
  while 1:
   k = f.readinto(buf)
   if not k: break
   h.update(buf[:k])
  f.close()
  out[n] = binascii.hexlify(h.digest()).decode()
 return out
"""
