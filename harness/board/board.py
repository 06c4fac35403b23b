"""Board: one API over every kind of MicroPython board, written once over the raw REPL.

exec/eval, files, deploy, running the firmware in the background while the test reads its
console, reset and close are the same code for every kind. What differs (how to interrupt,
whether a process can crash or be relaunched, how a reset is done, what close releases) is a
small set of hooks each kind overrides: UnixBoard (unix_board.py: the unix port behind a pty,
optionally a simulated ESP32) and SerialBoard (serial_board.py: a chip on a serial port).

The kinds register themselves under their `kind` name when their module is imported (the
package's __init__ imports both), which is how `Board.unix()`, `Board.serial()` and
`open_board()` reach them without this module importing theirs.
"""

from __future__ import annotations

import ast
import hashlib
import posixpath
import threading
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

import serial

from .console import Console
from .device_code import HASHER, MKDIRS, RMTREE, WIPE, run_script
from ..errors import (BoardConnectionError, BoardError, BoardRebooted, BoardTimeout, FirmwareError,
                      HarnessWarning)
from .firmware_run import FirmwareRun
from .spec import BoardSpec
from .transport import ReplTransport
from .unix_port import UnixPort

DEFAULT_TIMEOUT = 10.0
# Bytes per write command when uploading: big enough that raw-paste flow control, not
# round trips, sets the pace; small enough for a 110 KB heap.
UPLOAD_CHUNK = 4096


def board_path(path: str) -> str:
    """Board paths are relative to the board's root (cwd): '/lib/x.py' and 'lib/x.py' agree."""
    return path.replace("\\", "/").strip("/")


@dataclass
class FlashCleaning:
    """What clean_flash() did: paths removed (folders end in '/'), kept, asked to keep but not
    on the board, and folders left alone because another filesystem is mounted there."""
    removed: list[str]
    kept: list[str]
    missing: list[str]
    mounts: list[str]


@dataclass
class DeployReport:
    """What deploy() did: files written and files skipped because their hash matched."""
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0


class Board(ABC):
    """A MicroPython board the test drives: a unix-port process or a chip on a serial port.

    Open one with `Board.unix(...)`, `Board.serial(...)` or `open_board(spec)`; the object is
    in the raw REPL and ready once constructed (or construction released everything and raised).
    """

    kind: ClassVar[str] = ""  # "unix", "serial", "labgrid", "docker": set by each kind's class
    # Whether the board's files outlive it: a chip's flash is there for the next test (and the
    # next run) to find; a unix board's flash is a temp folder of its own.
    keeps_files: ClassVar[bool] = False
    _kinds: ClassVar[dict[str, type]] = {}
    # What only some kinds have; None on the others.
    port: UnixPort | None = None  # the unix-port process behind a unix board's pty
    sim: Any = None  # the Simulator a unix board runs under, if any
    root: Path | None = None  # the folder that is a unix board's flash
    # Class-level default: a kind's process watcher may ask for current_run while __init__ runs.
    _run: FirmwareRun | None = None

    def __init_subclass__(cls, kind: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.kind = kind
            Board._kinds[kind] = cls

    def __init__(self, transport: ReplTransport, name: str, timeout: float = DEFAULT_TIMEOUT):
        """Take the raw REPL over `transport`; on failure close everything and raise.

        A kind sets its own attributes before calling this: the hooks run from here on."""
        self.transport = transport
        self.name = name
        self.timeout = timeout
        self.console = Console(name)
        self._needs_resync = False
        self._relaunch_pending = False  # a boot run (after a simulated reset) ended the process
        # A reset that happened outside a firmware run, announced by note_reboot().
        self._reboot = threading.Condition()
        self._rebooted: str | None = None
        self._closed = False
        try:
            self._enter_repl()
        except BaseException:
            self.close()
            raise

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def unix(cls, micropython: str | None = None, root: str | Path | None = None, sim: Any = None,
             name: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> "Board":
        """A fresh unix-port board (a UnixBoard) in a temp folder (its flash), ready in the raw REPL."""
        return _kind_class("unix").open(micropython=micropython, root=root, sim=sim, name=name,
                                        timeout=timeout)

    @classmethod
    def serial(cls, device: str, name: str | None = None, baudrate: int = 115200,
               timeout: float = DEFAULT_TIMEOUT, reset: bool = False) -> "Board":
        """A board on a serial port (a SerialBoard): `auto`, a device path, or an rfc2217:// URL."""
        return _kind_class("serial").open(device, name=name, baudrate=baudrate, timeout=timeout,
                                          reset=reset)

    # -- hooks: what differs between kinds ------------------------------------------------
    @abstractmethod
    def reboot(self, hard: bool) -> bool:
        """Reset the board by this kind's means, for reset(); the firmware run is already over.
        Returns True when the reset is the raw REPL's own soft reset (Ctrl-D), which taking the
        REPL back then sends; False when the board has been reset and only the REPL is left."""

    def interrupt(self) -> None:
        """KeyboardInterrupt in whatever runs: Ctrl-C on the line."""
        try:
            self.transport.serial.write(b"\r\x03\x03")
        except (serial.SerialException, OSError):
            pass

    def interrupt_at_safe_point(self) -> bool:
        """Ask for a KeyboardInterrupt at the firmware's next simulator call; False where no
        simulator can (a chip: interrupt() is the way)."""
        return False

    def crash_reason(self) -> BoardError | None:
        """Why the board is gone for good (its process died), or None. A chip cannot crash in a
        way the host sees, only go silent or vanish from the port."""
        return None

    def connection_lost(self, error: Exception) -> BoardError:
        """The error to report when the board's port failed with `error`."""
        return self.crash_reason() or BoardConnectionError(self.name, f"lost the board's port: {error}")

    def relaunch(self) -> bool:
        """Start the board afresh (a hung or ended process); False where the harness cannot (a
        chip: the test resets it)."""
        return False

    def repl_source(self, code: str) -> str:
        """Code as this kind's raw REPL must receive it to compile as a chip's does."""
        return code

    def startup_code(self) -> str:
        """Code run before a script in each run (a simulated board's shims connect first)."""
        return ""

    def resets_recorded(self) -> int:
        """How many chip resets a simulator has recorded (0 where nothing records them)."""
        return 0

    def process_exits(self) -> int:
        """How many times the board's process has ended (0: a chip has no process)."""
        return 0

    def process_exit_code(self) -> int | None:
        """The exit code of the board's process if it ended and nothing relaunched it, else None."""
        return None

    def chip_reset_follows(self, exits_before: int) -> bool:
        """After a run ended without error: is the board going through a (simulated) chip reset
        that boots main.py again? Only a simulator announces one."""
        return False

    def release(self) -> None:
        """Free what this kind holds besides the transport (process, temp folder), for close()."""

    # -- notices from a run and from the kinds --------------------------------------------
    @property
    def current_run(self) -> FirmwareRun | None:
        """The run started by run() that the test has not collected yet (wait/stop), if any."""
        return self._run

    def run_ended(self, run: FirmwareRun, process_ended: bool) -> None:
        """A run's console pump stopped (its thread): the REPL must be resynchronised before the
        next command; with `process_ended`, the board's process must be relaunched first."""
        self._needs_resync = True
        if process_ended:
            self._relaunch_pending = True

    def run_collected(self, run: FirmwareRun) -> None:
        """The test took `run`'s outcome (wait/stop): the REPL is the board's again."""
        if self._run is run:
            self._run = None

    def force_stop(self, run: FirmwareRun, why: str) -> None:
        """A run that ignored its interrupt: reset the board so the next command works, and say
        so once (a warning, and a line in the console log where it happened)."""
        self.console.note(f"{why}: resetting the board")
        warnings.warn(HarnessWarning(f"{self.name}: {why}; the board was reset to stop it"), stacklevel=3)
        if self._run is run:
            self._run = None
        self._relaunch_pending = False
        self._enter_repl(soft_reset=self.reboot(hard=True))

    def note_soft_reboot(self) -> None:
        """The board soft-rebooted by itself between commands (SystemExit ends the unix port,
        which the board layer relaunches as a chip's soft reset): the next command resynchronises."""
        self._needs_resync = True

    def note_reboot(self, line: str) -> None:
        """The board reset outside a firmware run (a simulated chip reset from the REPL) and its
        REPL is back: the next command resynchronises and raises BoardRebooted naming `line`."""
        with self._reboot:
            self._rebooted = line
            self._needs_resync = True
            self._reboot.notify_all()

    # -- REPL ----------------------------------------------------------------------------
    def _enter_repl(self, soft_reset: bool = False) -> None:
        self._check_alive()
        try:
            self.transport.enter_repl(soft_reset=soft_reset, timeout=self.timeout)
        except BoardConnectionError as e:
            # A process that died at start (a binary that is not MicroPython) may show as the pty
            # hanging up before its exit is handled: the same one error either way.
            raise self.connection_lost(e) from None
        except BoardTimeout:
            crash = self.crash_reason()
            if crash is not None:
                raise crash from None
            if not self.relaunch():  # hung in code that ignores Ctrl-C: a restart, as a chip's reset
                raise
            self.transport.enter_repl(soft_reset=False, timeout=self.timeout)
        self._needs_resync = False

    def _check_alive(self) -> None:
        reason = self.crash_reason()
        if reason is not None:
            raise reason

    def exec(self, code: str, timeout: float | None = None) -> str:
        """Run code on the board; its printed output, or the board's exception raised here."""
        self._ready_for_command()
        resets_before = self.resets_recorded()
        exits_before = self.process_exits()
        try:
            out = self.transport.run(self.repl_source(code), timeout=timeout or self.timeout)
        except (BoardTimeout, BoardConnectionError) as e:
            self._needs_resync = True
            if self.process_exits() > exits_before and self.crash_reason() is None:
                # The process ended between commands (the last one raised SystemExit, which ends
                # the unix port where a chip soft-resets) and was relaunched as that soft reset:
                # this command met the new REPL unprepared. Take the REPL and send it again.
                self._enter_repl()
                return self.exec(code, timeout)
            self.interrupt()
            crash = self.crash_reason()
            if crash is not None:
                raise crash from None
            self._raise_if_rebooted("while running a command")
            raise e from None
        except BoardRebooted:
            self._needs_resync = True
            raise
        if self.resets_recorded() > resets_before:
            # The command reset the simulated chip (machine.reset(), deepsleep(), ...): the
            # process ends right after its output; wait for the relaunch and say so.
            with self._reboot:
                self._reboot.wait_for(lambda: self._rebooted is not None, self.timeout)
            self._raise_if_rebooted("during the command")
        return out.decode("utf-8", "replace").replace("\r\n", "\n")  # chips send CRLF

    def _raise_if_rebooted(self, when: str) -> None:
        """A reset noted outside a firmware run: take the new REPL and raise BoardRebooted."""
        if self._rebooted is None:
            return  # the usual case, checked before every command: no lock needed to see it
        with self._reboot:
            line, self._rebooted = self._rebooted, None
        if line is None:
            return
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
        if self._relaunch_pending:
            # The process ended with main.py (run after a simulated reset): a fresh REPL, as a
            # chip's would be there.
            self._relaunch_pending = False
            self.relaunch()
            self._enter_repl()
        if self._needs_resync:
            self._enter_repl()

    # -- files ---------------------------------------------------------------------------
    def put_bytes(self, data: bytes, remote: str) -> None:
        """Write bytes to a file on the board (parent folders must exist: see mkdir)."""
        path = board_path(remote)
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
        path = board_path(remote)
        text = self.exec(f"import binascii\nwith open({path!r},'rb') as _f:\n while 1:\n"
                         f"  _b=_f.read({UPLOAD_CHUNK // 2})\n  if not _b: break\n"
                         f"  print(binascii.hexlify(_b).decode())")
        return bytes.fromhex("".join(text.split()))

    def ls(self, path: str = "") -> list[str]:
        """Names in a folder of the board's filesystem."""
        return sorted(self.eval(f"__import__('os').listdir({board_path(path) or '.'!r})"))

    def exists(self, path: str) -> bool:
        code = f"import os\ntry:\n os.stat({board_path(path)!r})\n print(1)\nexcept OSError:\n print(0)"
        return self.exec(code).strip() == "1"

    def mkdir(self, path: str) -> None:
        """Create a folder and its parents (no error if it exists)."""
        self.exec(MKDIRS + f"_mkdirs({board_path(path)!r})")

    def rm(self, path: str, recursive: bool = False) -> None:
        """Remove a file, or a folder (with recursive=True, everything in it)."""
        self.exec(RMTREE + f"_rm({board_path(path)!r},{recursive!r})")

    def clean_flash(self, keep: Iterable[str] = ()) -> FlashCleaning:
        """Remove every file and folder on the board except the paths in `keep` (relative to
        the board's root; a kept folder keeps what is in it, a kept file keeps its folders) and
        any other filesystem mounted in it (an SD card), then soft reset it: the flash a fresh
        simulated board starts with, and no module of a removed file left in RAM. The console
        notes what was removed and kept, and any kept path that was not on the board (a misspelt
        --board-keep saves nothing)."""
        kept = sorted({p for p in (posixpath.normpath(board_path(k)) for k in keep) if p not in ("", ".")})
        self.exec(RMTREE + WIPE + "_mounts = []")
        removed, mounts = self.eval(f"(sorted(_wipe('',{kept!r},_mounts)), _mounts)", timeout=max(self.timeout, 30))
        missing = [k for k in kept if not self.exists(k)]
        parts = [f"removed {', '.join(removed)}" if removed else "nothing to remove"]
        if kept:
            parts.append(f"kept {', '.join(k for k in kept if k not in missing) or 'nothing'}")
        if missing:
            parts.append(f"asked to keep but not on the board: {', '.join(missing)}")
        if mounts:
            parts.append(f"left alone (another filesystem): {', '.join(m + '/' for m in mounts)}")
        self.console.note("flash cleaned: " + "; ".join(parts))
        self.reset()
        return FlashCleaning(removed, [k for k in kept if k not in missing], missing, mounts)

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
            self.exec(MKDIRS + "".join(f"_mkdirs({d!r})\n" for d in dirs))
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
        self.exec(HASHER)
        return self.eval(f"_hh({names!r})", timeout=max(self.timeout, 30))

    # -- running firmware ----------------------------------------------------------------
    def run(self, script: str = "main.py") -> FirmwareRun:
        """Start a script (main.py by default) in the background; read it through `console`."""
        self._ready_for_command()
        run = FirmwareRun(self, script)
        self.console.restart()
        # On a simulated board the shims connect first, so even `import utime` reaches them and
        # the inputs the test set so far arrive in one boot record, before the firmware's heap fills.
        self.transport.start(self.startup_code() + run_script(board_path(script)))
        self._run = run
        run.start()
        return run

    def stop(self) -> None:
        """Stop the running firmware, if any."""
        if self._run is not None:
            self._run.stop()

    def _abandon_run(self, timeout: float) -> None:
        """Before a reset or close: stop the run's pump, interrupt the script, wait for the pump."""
        if self._run is not None:
            self._run.abandon()
            self.interrupt()
            self._run.wait_done(timeout)

    # -- reset ---------------------------------------------------------------------------
    def reset(self, hard: bool = False) -> None:
        """Reset the board and take its REPL back. Unix port: a restart (soft and hard alike)."""
        self._abandon_run(5.0)
        self._run = None
        self._enter_repl(soft_reset=self.reboot(hard))

    # -- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the firmware, release the port, kill the process: safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._abandon_run(2.0)
        try:
            self.transport.close()
        except (serial.SerialException, OSError):
            pass
        self.release()

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Board {self.name}>"


def _kind_class(kind: str) -> Any:
    """The registered class of a board kind (its module registers it on import)."""
    try:
        return Board._kinds[kind]
    except KeyError:
        raise BoardError(kind, f"no board kind {kind!r} is registered; import micropython_hil.board "
                         "(the package registers unix and serial)") from None


def open_board(spec: BoardSpec | str, micropython: str | None = None, sim: Any = None,
               timeout: float = DEFAULT_TIMEOUT, name: str | None = None) -> Board:
    """Open a board from a `--board` spec (a BoardSpec, or its text: `unix`, `unix:PROFILE`,
    `docker:PROFILE`, `serial:PORT`, `serial:auto`, `serial:rfc2217://HOST:PORT`, `labgrid:PLACE`).
    The profile of `unix:PROFILE` and `docker:PROFILE` is the simulator's business: pass `sim`
    made with it. A docker board runs in a container on DOCKER_HOST's engine (else the local
    socket) with its own network (`micropython` does not apply: the image has its interpreter).
    `name`: what messages and the console call the board (default: its kind and where it is)."""
    spec = spec if isinstance(spec, BoardSpec) else BoardSpec.parse(spec)
    if spec.kind == "unix":
        return Board.unix(micropython=micropython, sim=sim, timeout=timeout, name=name)
    if spec.kind == "docker":  # docker_board.py: a container of its own, its network wired as registered
        return _kind_class("docker").open_spec(sim=sim, name=name, timeout=timeout)
    if spec.kind == "labgrid":  # labgrid_board.py: the place locked, its serial port opened
        return _kind_class("labgrid").open(spec.place, name=name, timeout=timeout)
    return Board.serial(spec.port, name=name, timeout=timeout)


def _ignored(path: Path) -> bool:
    return "__pycache__" in path.parts or path.name.startswith(".") or path.suffix == ".pyc"
