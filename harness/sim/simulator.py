"""Host end of the simulated ESP32: sets what the board's shims see, records what they do.

The board (the unix port running simulated_boards/ shims) connects at import to a loopback TCP
socket this class listens on, and both ends exchange JSON lines (the control channel, beside
the REPL the firmware occupies). Inputs set here are kept, and replayed to each new launch in
its boot record, so they survive resets. Resets end the board's process with an EXIT_* code
after reporting the cause; `on_board_exit`/`next_boot` prepare the next launch.
If the host goes away the board runs on alone: inputs keep their last values, outputs are
dropped, stepped time becomes fast time.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import selectors
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import SimulatorError
from .inputs import AdcHandle, ByteHandle, PartHandle, PinHandle, WifiHandle, part_info
from .inputstate import InputState
from .profiles import SIM_ROOT, Profile, load_profile
from .protocol import RESET_EXIT_CODES

# machine.reset_cause() values of the esp32 port; a brown-out reads as a power-on reset there.
_CAUSE_CODES = {"pwron": 1, "hard": 2, "wdt": 3, "deepsleep": 4, "soft": 5, "brownout": 1}
TIMER_WAKE, EXT0_WAKE, EXT1_WAKE = 4, 2, 3
TIME_MODES = ("real", "fast", "stepped")
_EPOCH_2000 = _dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc)


def _heap_bytes(size: str) -> int:
    """'110K' -> 112640 (the -X heapsize syntax: optional K or M suffix)."""
    units = {"K": 1024, "M": 1024 * 1024}
    size = size.strip().upper()
    return int(float(size[:-1]) * units[size[-1]]) if size[-1] in units else int(size)


_SHIM_HEAP: list[int] = []


def chip_heap_on_host(heapsize: str | int) -> int:
    """The chip's heap expressed for this host's unix port: the same number of GC blocks.

    MicroPython's heap is counted in blocks of four machine words: 16 bytes on the ESP32's 32-bit
    core, 32 bytes on a 64-bit host, where every object takes about twice the bytes. Giving the
    host port the chip's byte count would fail firmware that fits on the chip."""
    word_ratio = (8 if sys.maxsize > 2**32 else 4) // 4
    return _heap_bytes(heapsize) * word_ratio


def shim_heap_bytes(micropython: str = "micropython") -> int:
    """Heap the shims of a typical IoT firmware take (machine, network and the clock/socket
    shims), measured once per host process (~40 ms). On the chip those modules live in flash,
    so the board gets this much more heap than the profile's: within a few KB, the firmware
    sees the chip's heap (more if it never imports machine or network)."""
    if not _SHIM_HEAP:
        code = ("import gc\ngc.collect()\na = gc.mem_alloc()\n"
                "import _simboot, machine, network\n"
                "gc.collect()\nprint(gc.mem_alloc() - a)\n")
        env = dict(os.environ, MICROPYPATH=f".frozen:{SIM_ROOT}", MPSIM_CHANNEL="")
        try:
            out = subprocess.run([micropython, "-X", "heapsize=4M", "-c", code], env=env,
                                 capture_output=True, text=True, timeout=30).stdout
            used = int(out.strip().splitlines()[-1])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            used = 72 * 1024  # measured on MicroPython 1.29 (unix port, 64-bit)
        _SHIM_HEAP.append((used + 4095) // 4096 * 4096)
    return _SHIM_HEAP[0]


@dataclass
class Publish:
    """One MQTT PUBLISH the firmware sent, stamped with the board's clock when it was written."""

    topic: str
    board_time_us: int
    payload_len: int
    host_time: float


class Simulator:
    """The control channel's host end plus the board's simulated world (inputs, outputs, clock)."""

    def __init__(self, profile: str = "esp32", time_mode: str = "real", *,
                 rtc_start: _dt.datetime | str | None = None, parts_dirs: list[str | Path] = (),
                 wifi_connect_s: float = 0.2, reply_timeout: float = 10.0) -> None:
        if time_mode not in TIME_MODES:
            raise SimulatorError(f"unknown time mode {time_mode!r}: use one of {', '.join(TIME_MODES)}")
        self.profile: Profile = load_profile(profile)
        self.time_mode = time_mode
        self.reply_timeout = reply_timeout
        self.parts_dirs = [SIM_ROOT / "devices"] + [Path(d).resolve() for d in parts_dirs]
        # Inputs (replayed in each boot record): the handles change them through this object,
        # whose lock also guards the channel and the records below.
        self.inputs = InputState(self._send, wifi_connect_s)
        self._lock = self.inputs.lock
        self._changed = threading.Condition(self._lock)
        self._token = secrets.token_hex(8)
        # Outputs (as last reported).
        self.pin_levels: dict[int, int] = {}
        self.pin_history: dict[int, list[tuple[int, int]]] = {}
        self.pwm: dict[int, dict] = {}
        self.uart_written: dict[int, bytearray] = {}
        self.spi_written: dict[int, bytearray] = {}
        self.i2c_writes: list[tuple[int, int, bytes]] = []
        self.publishes: list[Publish] = []
        self.on_publish: list[Callable[[Publish], None]] = []
        self.resets: list[dict] = []
        self.errors: list[str] = []
        self.board_time_us = 0
        self._idle_at = -1
        self._acks: set[int] = set()
        self._seq = 0
        self._stepped_limit = 0
        # The boot record the next launch receives.
        self._boot: dict[str, Any] = {"cause": _CAUSE_CODES["pwron"], "wake": 0, "clock": 0,
                                      "rtc_epoch": self._rtc_epoch(rtc_start), "rtc_mem": ""}
        self._last_reset: dict | None = None
        self._conn: socket.socket | None = None
        self._launches = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ)
        self._wake_r, self._wake_w = os.pipe()
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="sim-channel", daemon=True)
        self._thread.start()

    # -- contract with the board layer -------------------------------------------------------
    def launch_args(self) -> list[str]:
        """Arguments for `micropython`: the chip's heap plus what the shims themselves take (on
        the chip those modules live in flash), so MemoryError comes where it would."""
        return ["-X", f"heapsize={(chip_heap_on_host(self.profile.heapsize) + shim_heap_bytes()) // 1024}K"]

    def micropypath(self) -> list[str]:
        """Folders to put on MICROPYPATH (after .frozen, before the board's lib)."""
        return [str(SIM_ROOT)]

    def startup_code(self) -> str:
        """Code the board layer runs first in each launch, before boot.py/main.py: it connects
        the control channel and makes `import utime`/`usocket`/`uselect` reach the shims."""
        return "import _simboot\n"

    def env(self) -> dict[str, str]:
        """Environment for each launch: where the control channel is, profile and time mode."""
        return {"MPSIM_CHANNEL": f"127.0.0.1:{self._listener.getsockname()[1]}",
                "MPSIM_TOKEN": self._token, "MPSIM_PROFILE": self.profile.name,
                "MPSIM_TIME": self.time_mode,
                "MPSIM_PARTS": ":".join(str(d) for d in self.parts_dirs[1:])}

    def on_board_exit(self, code: int) -> bool:
        """Called by the board layer when the process ended: True if it was a chip reset to relaunch."""
        if code not in RESET_EXIT_CODES:
            return False
        self.next_boot(exit_code=code)
        return True

    def next_boot(self, exit_code: int | None = None, cause: str | None = None,
                  timeout: float = 5.0) -> dict:
        """Prepare the next launch after the process ended; returns its boot record.

        Waits for the ended run's last messages (its reset report). Without a report the
        relaunch counts as `cause` (default "hard", like pressing EN). Deep sleep resumes the
        clock at the wake time (real mode: this call waits out the rest of the sleep)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._conn is not None and time.monotonic() < deadline:
                self._changed.wait(deadline - time.monotonic())
            r, self._last_reset = self._last_reset, None
            boot = dict(self._boot)
            if r is None:
                boot.update(cause=_CAUSE_CODES[cause or "hard"], wake=0, clock=self.board_time_us)
            else:
                kind = r["cause"]
                boot.update(cause=_CAUSE_CODES[kind], wake=0, clock=r["c"])
                boot["rtc_epoch"] = r["rtc_base"]
                boot["rtc_mem"] = r["rtc_mem"]
                if kind == "brownout":
                    boot["rtc_mem"] = ""
                if kind == "deepsleep":
                    ms = r.get("sleep_ms")
                    boot["wake"] = TIMER_WAKE if ms is not None else EXT0_WAKE
                    if ms is not None:
                        boot["clock"] = r["c"] + int(ms) * 1000
            wait_real = (boot["clock"] - self.board_time_us) / 1e6
            if self.time_mode == "stepped":
                self._stepped_limit = max(self._stepped_limit, boot["clock"])
            self._boot = boot
            self.board_time_us = max(self.board_time_us, boot["clock"])
        if self.time_mode == "real" and wait_real > 0:
            time.sleep(wait_real)
        return dict(boot)

    def close(self) -> None:
        """Stop the channel thread and close every socket; the board, if alive, runs on alone."""
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self._sel.close()
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- inputs --------------------------------------------------------------------------------
    def pin(self, pin: int) -> "PinHandle":
        """A GPIO of the board: drive it (set, pulse) or read what the firmware drives."""
        return PinHandle(self, self.profile.check_pin(pin))

    def adc(self, pin: int) -> "AdcHandle":
        """An ADC pin: set the voltage the firmware reads."""
        return AdcHandle(self, self.profile.check_pin(pin, adc=True))

    def sensor(self, name: str, address: int | None = None) -> "PartHandle":
        """The simulated I2C part `name` at `address` (default: its first address); attach it."""
        info = part_info(name, self.parts_dirs)
        if address is None:
            address = info.addresses[0]
        if address not in info.addresses:
            raise SimulatorError(f"{name} answers at {', '.join(hex(a) for a in info.addresses)}, "
                                 f"not {address:#x}")
        self.inputs.attach_part(address, name)
        return PartHandle(self, info, address)

    def uart(self, uart_id: int) -> "ByteHandle":
        """A UART: feed bytes the firmware reads; `.written` holds what it wrote."""
        return ByteHandle(self, "uart", uart_id, self.uart_written)

    def spi(self, spi_id: int) -> "ByteHandle":
        """An SPI bus: feed bytes its reads return; `.written` holds what the firmware wrote."""
        return ByteHandle(self, "spi", spi_id, self.spi_written)

    @property
    def wifi(self) -> "WifiHandle":
        """The simulated access point: configure networks, drop the link, refuse reconnects."""
        return WifiHandle(self)

    def brownout(self) -> None:
        """A power dip: the board resets at its next shim call (reset_cause() == PWRON_RESET)."""
        self._send({"t": "brownout"}, need_board=True)

    def fail_i2c(self, address: int, mode: str = "nack") -> None:
        """The part at `address` stops answering: OSError ENODEV (nack) or ETIMEDOUT (timeout)."""
        if mode not in ("nack", "timeout"):
            raise SimulatorError(f"fail_i2c mode {mode!r}: use 'nack' or 'timeout'")
        self.inputs.fail_part(address, mode)

    def recover_i2c(self, address: int) -> None:
        """The part at `address` answers again."""
        self.inputs.recover_part(address)

    # -- time ----------------------------------------------------------------------------------
    def advance(self, seconds: float = 0.0, *, ms: float = 0.0, wait: bool = True,
                timeout: float | None = None) -> None:
        """Move the board's clock forward. Stepped: the board runs until it sleeps past the new
        time (returns then, with wait=True). Real/fast: the clock jumps at once."""
        us = int(round(seconds * 1e6 + ms * 1e3))
        if us < 0:
            raise SimulatorError(f"advance: cannot move the board's clock back ({seconds}s, {ms}ms)")
        with self._lock:
            self._seq += 1
            n = self._seq
            self._stepped_limit += us
            target = self._stepped_limit
            self._send({"t": "adv", "us": us, "n": n}, need_board=True)
        if not wait:
            return
        if self.time_mode == "stepped":
            # Done when the board sleeps past the target, or its run ended meanwhile.
            self._wait_for(lambda: self._idle_at >= target or self._conn is None, timeout,
                           f"the board did not reach board time {target / 1e6:.3f}s and sleep: "
                           "is it running code that never sleeps (or idle at the REPL)? "
                           "use advance(..., wait=False) there")
        else:
            self._wait_for(lambda: n in self._acks or self._conn is None, timeout,
                           "the board did not take the clock jump")

    def interrupt(self) -> bool:
        """KeyboardInterrupt in the running firmware at its next shim call (sleep, pin, ...);
        False if no board is connected to hear it."""
        with self._lock:
            if self._conn is None:
                return False
            self._send({"t": "interrupt"})
            return self._conn is not None

    def sync(self, timeout: float | None = None) -> None:
        """Return once the board has applied every command sent so far (it must be running)."""
        with self._lock:
            self._seq += 1
            n = self._seq
            self._send({"t": "sync", "n": n}, need_board=True)
        self._wait_for(lambda: n in self._acks, timeout,
                       "the board did not apply the commands (blocked outside shim calls?)")

    @property
    def connected_once(self) -> bool:
        """True once any launch has connected to this simulator."""
        return self._launches > 0

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until the board's process has gone and all it reported is recorded here."""
        self._wait_for(lambda: self._conn is None, timeout, "the board is still connected")

    def wait_for_board(self, timeout: float | None = None) -> None:
        """Wait until a board is connected to the channel."""
        self._wait_for(lambda: self._conn is not None, timeout, "no board connected")

    @staticmethod
    def _rtc_epoch(start: _dt.datetime | str | None) -> int:
        if start is None:
            return 0  # the ESP32's RTC starts at 2000-01-01 00:00:00
        if isinstance(start, str):
            start = _dt.datetime.fromisoformat(start)
        if start.tzinfo is None:
            start = start.replace(tzinfo=_dt.timezone.utc)
        secs = int((start - _EPOCH_2000).total_seconds())
        if secs < 0:
            raise SimulatorError(f"rtc_start {start} is before 2000-01-01, the ESP32 port's epoch")
        return secs

    # -- channel -------------------------------------------------------------------------------
    def _send(self, msg: dict, need_board: bool = False) -> None:
        with self._lock:
            if self._conn is None:
                if need_board:
                    raise SimulatorError(f"no board is running on the simulator (needed for {msg['t']})")
                return
            try:
                self._conn.sendall(json.dumps(msg).encode() + b"\n")
            except OSError:
                self._drop_conn()

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds, re-checked each time the board reports something
        (publish, reset, output, ...); its last value. Lets host code wait on the simulator's
        records instead of polling them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def _wait_for(self, cond: Callable[[], bool], timeout: float | None, what: str) -> None:
        deadline = time.monotonic() + (self.reply_timeout if timeout is None else timeout)
        with self._changed:
            while not cond():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SimulatorError(f"simulator: {what} (waited {timeout or self.reply_timeout}s)")
                self._changed.wait(left)

    def _boot_record(self) -> dict:
        return {"t": "boot", **self._boot, "mode": self.time_mode, "profile": self.profile.data,
                **self.inputs.boot_fields()}

    def _serve(self) -> None:
        bufs: dict[socket.socket, bytes] = {}
        while not self._closed:
            for key, _ in self._sel.select():
                obj = key.fileobj
                if obj == self._wake_r:
                    return
                if obj is self._listener:
                    try:
                        conn, _ = self._listener.accept()
                    except BlockingIOError:
                        continue
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    bufs[conn] = b""
                    self._sel.register(conn, selectors.EVENT_READ)
                    continue
                try:
                    data = obj.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self._sel.unregister(obj)
                    bufs.pop(obj, None)
                    with self._changed:
                        if obj is self._conn:
                            self._drop_conn()
                        else:
                            obj.close()
                    continue
                bufs[obj] += data
                *lines, bufs[obj] = bufs[obj].split(b"\n")
                for line in lines:
                    self._handle(obj, json.loads(line))

    def _drop_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._changed.notify_all()

    def _handle(self, conn: socket.socket, m: dict) -> None:
        t = m["t"]
        with self._changed:
            if t == "hello":
                if m.get("token") != self._token:
                    return  # a board of another simulator: ignore it
                if self._conn is not None and self._conn is not conn:
                    self._drop_conn()  # the previous launch is gone (or going)
                self._conn = conn
                self._launches += 1
                self._idle_at = -1
                self._send(self._boot_record())
            elif t == "pin":
                self.pin_levels[m["id"]] = m["v"]
                self.pin_history.setdefault(m["id"], []).append((m.get("c", 0), m["v"]))
            elif t == "pwm":
                self.pwm[m["id"]] = {"freq": m["freq"], "duty_u16": m["duty_u16"]}
            elif t == "uart":
                self.uart_written.setdefault(m["id"], bytearray()).extend(bytes.fromhex(m["data"]))
            elif t == "spi":
                self.spi_written.setdefault(m["id"], bytearray()).extend(bytes.fromhex(m["data"]))
            elif t == "i2c":
                self.i2c_writes.append((m["bus"], m["addr"], bytes.fromhex(m["data"])))
            elif t == "pub":
                p = Publish(m["topic"], m["c"], m["len"], time.time())
                self.publishes.append(p)
                for cb in list(self.on_publish):
                    cb(p)
            elif t == "idle":
                self._idle_at = m["c"]
            elif t in ("ack", "advanced"):
                self._acks.add(m["n"])
            elif t == "reset":
                self.resets.append(m)
                self._last_reset = m
                self._send({"t": "reset_ack"})  # the board waits for this before it exits
            elif t == "err":
                self.errors.append(m["msg"])
            elif t == "wifi_outage":
                self.inputs.note_wifi_outage(m["n"], m["dropped_at"], m["refuse_until"])
            if "c" in m:
                self.board_time_us = max(self.board_time_us, m["c"])
            self._changed.notify_all()
