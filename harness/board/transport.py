"""Bytes to a MicroPython REPL: mpremote's SerialTransport over a serial device or a pty.

Nothing else in the harness speaks raw REPL. This module adds what a test harness needs on
top of mpremote: clear errors for absent/busy/forbidden ports, ESP32 auto-reset handling
through DTR/RTS, `serial:auto` discovery, and exec with a timeout that tells a hang from a
MicroPython exception.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import time
from typing import Any

import serial
import serial.tools.list_ports
from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport

from .console import BOOT_BANNER
from ..errors import BoardConnectionError, BoardException, BoardRebooted, BoardTimeout

# USB VID:PID of the bridges ESP32 boards use (None: any PID of that vendor).
ESP32_USB_IDS: dict[int, set[int] | None] = {
    0x10C4: {0xEA60},                  # Silicon Labs CP210x
    0x1A86: {0x7523, 0x55D4, 0x55D3},  # WCH CH340, CH9102, CH343
    0x0403: {0x6001, 0x6010, 0x6014, 0x6015},  # FTDI
    0x303A: None,                      # Espressif native USB (ESP32-S2/S3/C3/C6)
}

# The blocking read granularity: how long a read waits before timeouts are re-checked.
READ_SLICE_S = 0.2


def find_esp32_port() -> str:
    """`serial:auto`: the first serial port whose USB VID:PID is an ESP32 bridge or native USB."""
    for port in sorted(serial.tools.list_ports.comports(), key=lambda p: p.device):
        if port.vid in ESP32_USB_IDS:
            pids = ESP32_USB_IDS[port.vid]
            if pids is None or port.pid in pids:
                return port.device
    raise BoardConnectionError(
        "serial:auto", "no ESP32 serial port found (CP210x, CH340/CH9102, FTDI, Espressif USB); "
        "plug a board in or name the port: --board serial:/dev/ttyUSB0"
    )


class ReplTransport(SerialTransport):
    """mpremote's SerialTransport, opened by the harness with clear errors and ESP32 reset control."""

    def __init__(self, device: str, name: str | None = None, baudrate: int = 115200,
                 exclusive: bool = True, reset_on_open: bool = False):
        # SerialTransport.__init__ opens the port its own way; we open it ourselves to control
        # DTR/RTS before the open (an ESP32 resets when they toggle) and to word errors.
        self.in_raw_repl = False
        self.use_raw_paste = True
        self.mounted = False
        self.device_name = device
        self.name = name or device
        options = {"baudrate": baudrate, "timeout": READ_SLICE_S, "write_timeout": 10}
        if "://" not in device:  # a local device can be locked against a second user
            options["exclusive"] = exclusive
        self.serial = serial.serial_for_url(device, do_not_open=True, **options)
        # Both lines released: on the usual ESP32 auto-reset circuit EN and IO0 stay high.
        self.serial.dtr = False
        self.serial.rts = False
        self._open()
        # Blocking reads (with a short timeout) instead of mpremote's 10 ms polling: mpremote
        # turns this on only for /dev/pts/*, but any device pyserial reads with a timeout works.
        self.is_pty = True
        self._unread = bytearray()  # read past what read_until was asked for: the next read's
        if reset_on_open:
            self.hard_reset()

    def _open(self) -> None:
        device = self.device_name
        if "://" not in device and not os.path.exists(device):
            raise BoardConnectionError(self.name, f"serial port {device} does not exist; is the board "
                                       "plugged in? (`hil boards` lists ports)")
        try:
            self.serial.open()
        except serial.SerialException as e:
            err = getattr(e, "errno", None)
            text = str(e)
            if err == errno.EACCES or "Permission denied" in text:
                raise BoardConnectionError(self.name, f"permission denied opening {device}; add your "
                                           "user to the 'dialout' group (then log in again)") from None
            if err == errno.EBUSY or "exclusively lock" in text or "busy" in text.lower():
                raise BoardConnectionError(self.name, f"serial port {device} is busy: another program "
                                           "(a serial monitor, mpremote, another test run?) has it open") from None
            if err == errno.ENOENT or "No such file" in text:
                raise BoardConnectionError(self.name, f"serial port {device} does not exist") from None
            raise BoardConnectionError(self.name, f"cannot open {device}: {text}") from None

    def hard_reset(self, pulse_s: float = 0.1) -> None:
        """Pulse EN low through RTS (the ESP32 auto-reset circuit), IO0 high: a normal boot."""
        try:
            self.serial.dtr = False
            self.serial.rts = True
            time.sleep(pulse_s)
            self.serial.rts = False
        except OSError as e:
            if e.errno in (errno.ENOTTY, errno.EINVAL):
                raise BoardConnectionError(self.name, f"{self.device_name} has no RTS/DTR lines: "
                                           "cannot hard-reset this board from the host") from None
            raise

    def close(self) -> None:
        try:
            super().close()
        except OSError:
            self.serial.close()

    # -- reading in chunks -------------------------------------------------------------------
    def _read_some(self) -> bytes:
        """What the board sent: bytes kept from the last read first, else whatever is waiting
        (blocking at most one read slice for the first byte)."""
        if self._unread:
            data = bytes(self._unread)
            self._unread.clear()
            return data
        data = self.serial.read(1)
        if data and self.serial.in_waiting:
            data += self.serial.read(self.serial.in_waiting)
        return data

    def read_until(self, min_num_bytes: int, ending: bytes, timeout: float | None = 10,
                   data_consumer: Any = None, timeout_overall: float | None = None) -> bytes:
        """mpremote's read_until (same arguments, same result), reading what is waiting in one
        call: mpremote reads a byte per call, which held exec output to about 80-240 KB/s. Bytes
        that arrive after `ending` are kept for the next read. With `data_consumer`, output is
        handed over as it comes and only the ending is returned, as mpremote does."""
        data = bytearray()
        begin_overall = begin_char = time.monotonic()
        while True:
            chunk = self._read_some()
            if chunk:
                begin_char = time.monotonic()
                search_from = max(0, len(data) - len(ending) + 1)
                data += chunk
                found = data.find(ending, search_from)
                if found >= 0:
                    end = found + len(ending)
                    self._unread += data[end:]
                    del data[end:]
                    if data_consumer is not None:
                        data_consumer(bytes(data))
                        return ending
                    return bytes(data)
                if data_consumer is not None and len(data) >= len(ending):
                    keep = len(ending) - 1  # a multi-byte ending may straddle two chunks
                    data_consumer(bytes(data[:len(data) - keep]))
                    del data[:len(data) - keep]
                continue
            now = time.monotonic()
            if (timeout is not None and now >= begin_char + timeout) or \
                    (timeout_overall is not None and now >= begin_overall + timeout_overall):
                if data_consumer is not None and data:
                    data_consumer(bytes(data))
                return bytes(data)

    # -- REPL operations with timeouts and harness errors --------------------------------
    def enter_repl(self, soft_reset: bool = False, timeout: float = 10) -> None:
        """Interrupt whatever runs and enter the raw REPL, or raise BoardTimeout."""
        self._unread.clear()  # entering the REPL flushes what the board sent before
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints raw bytes on failure
                self.enter_raw_repl(soft_reset=soft_reset, timeout_overall=timeout)
        except TransportError as e:
            raise BoardTimeout(self.name, f"no raw REPL prompt within {timeout:g} s ({e}); the "
                               "board is hung, busy in code that ignores Ctrl-C, or not MicroPython") from None
        except (serial.SerialException, OSError) as e:  # OSError: EIO from a pty whose process died
            raise BoardConnectionError(self.name, f"lost {self.device_name}: {e}") from None

    def run(self, code: str | bytes, timeout: float = 10) -> bytes:
        """Execute code in the raw REPL; its stdout, or BoardException / BoardTimeout."""
        printed = bytearray()  # everything the board sent, kept to tell a reboot from a hang
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints raw bytes on failure
                self.exec_raw_no_follow(code)
                _, err = self.follow(timeout, data_consumer=printed.extend)
        except TransportError as e:
            text = printed.decode("utf-8", "replace")
            if BOOT_BANNER.search(text):
                raise BoardRebooted(self.name, "the board rebooted while running a command; "
                                    f"it printed:\n{text[-1500:]}") from None
            raise BoardTimeout(self.name, f"no answer within {timeout:g} s ({e})") from None
        except serial.SerialException as e:
            raise BoardConnectionError(self.name, f"lost {self.device_name}: {e}") from None
        except OSError as e:
            raise BoardConnectionError(self.name, f"lost {self.device_name}: {e}") from None
        if err:
            output = bytes(printed[:-1]).decode("utf-8", "replace").replace("\r\n", "\n")
            raise BoardException.from_traceback(self.name, err.decode("utf-8", "replace"), output)
        return bytes(printed[:-1])  # without the end-of-output marker

    def start(self, code: str | bytes) -> None:
        """Send code to the raw REPL without waiting for it to finish (a background run)."""
        try:
            self.exec_raw_no_follow(code)
        except TransportError as e:
            raise BoardTimeout(self.name, f"could not start code: {e}") from None

    def read_available(self) -> bytes:
        """Whatever the board printed, waiting at most one read slice for the first byte."""
        return self._read_some()
