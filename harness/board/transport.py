"""Bytes to a MicroPython REPL: mpremote's SerialTransport over a serial device or a pty.

Nothing else in the harness speaks raw REPL. This module adds what a test harness needs on
top of mpremote: clear errors for absent/busy/forbidden ports, ESP32 auto-reset handling
through DTR/RTS, `serial:auto` discovery, and exec with a timeout that tells a hang from a
MicroPython exception.

Local devices are opened as `PollSerial`: pyserial's POSIX port waits with select(), which
refuses descriptors numbered past 1023, and a process driving a fleet of boards holds more.
"""

from __future__ import annotations

import errno
import os
import select
import struct
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
# How long one step of the raw REPL protocol (a prompt, a raw-paste window) may take: a board on a
# loaded host (a fleet starting on two cores) answers in tens of milliseconds, not one slice.
PROTOCOL_TIMEOUT_S = 10.0
RAW_REPL_BANNER = b"raw REPL; CTRL-B to exit\r\n"


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


class PollSerial(serial.Serial):
    """pyserial's POSIX serial port, reading and writing with poll() instead of select().

    select() takes no descriptor numbered FD_SETSIZE (1024) or more ("filedescriptor out of range
    in select()"), and one process holding a hundred boards (each: a pty, its simulator's
    sockets, pyserial's pipes) passes that. pyserial's own PosixPollSerial polls only in read(),
    and its read() fails when the timeout passes with nothing read; write() selects as well.
    Same behaviour as serial.Serial otherwise: a timeout ends a read with what came; a device
    that hangs up raises SerialException; cancel_read()/cancel_write() end a wait.
    """

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise serial.PortNotOpenError()
        data = bytearray()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(self.pipe_abort_read_r, select.POLLIN)
        while len(data) < size:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = dict(poller.poll(None if left is None else left * 1000))
            if self.pipe_abort_read_r in ready:  # cancel_read()
                os.read(self.pipe_abort_read_r, 1000)
                break
            if not ready:
                break  # the timeout passed
            try:
                chunk = os.read(self.fd, size - len(data))
            except OSError as e:  # EIO: the other end of a pty is gone
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    continue
                raise serial.SerialException(f"read failed: {e}") from None
            if not chunk:
                raise serial.SerialException("device reports readiness to read but returned no data "
                                             "(device disconnected or multiple access on port?)")
            data += chunk
            if left == 0.0:
                break
        return bytes(data)

    def write(self, data: Any) -> int:
        if not self.is_open:
            raise serial.PortNotOpenError()
        view = memoryview(serial.to_bytes(data))
        total = len(view)
        timeout = self._write_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        poller.register(self.pipe_abort_write_r, select.POLLIN)
        while view:
            try:
                written = os.write(self.fd, view)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    raise serial.SerialException(f"write failed: {e}") from None
                written = 0
            if timeout == 0:
                return written  # non-blocking: what went now
            view = view[written:]
            if not view:
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise serial.SerialTimeoutException("Write timeout")
            ready = dict(poller.poll(None if left is None else left * 1000))
            if self.pipe_abort_write_r in ready:  # cancel_write()
                os.read(self.pipe_abort_write_r, 1000)
                break
            if not ready:
                raise serial.SerialTimeoutException("Write timeout")
        return total - len(view)


def open_serial(device: str, **options: Any) -> serial.SerialBase:
    """An unopened pyserial port: a PollSerial for a local device on POSIX, else whatever
    serial_for_url makes of the URL (rfc2217://, socket://, ...)."""
    if "://" in device or os.name != "posix":
        return serial.serial_for_url(device, do_not_open=True, **options)
    port = PollSerial(None, **options)
    port.port = device
    return port


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
        self.serial = open_serial(device, **options)
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

    def _read_exact(self, n: int, timeout: float = PROTOCOL_TIMEOUT_S) -> bytes:
        """`n` bytes (fewer only if `timeout` passes first), kept bytes first."""
        data = bytearray(self._unread[:n])
        del self._unread[:n]
        deadline = time.monotonic() + timeout
        while len(data) < n and time.monotonic() < deadline:
            data += self.serial.read(n - len(data))
        return bytes(data)

    # -- the raw REPL protocol ---------------------------------------------------------------
    # The three steps mpremote takes, done here without its prints and its one-slice reads:
    # mpremote prints what it read when a step fails (the harness raises its own errors, and
    # redirecting sys.stdout is no way out: it swaps one object for the whole process, and two
    # boards driven from two threads left it a StringIO for good), and it reads replies with the
    # port's timeout, one read slice here, which a board on a busy host can miss.
    def enter_raw_repl(self, soft_reset: bool = True, timeout_overall: float = 10) -> None:
        """Interrupt what runs and enter the raw REPL (after a soft reset, with `soft_reset`);
        TransportError if a prompt does not come within `timeout_overall`."""
        self.serial.write(b"\r\x03")  # Ctrl-C
        self._unread.clear()
        while waiting := self.serial.in_waiting:  # what the board printed before: not ours
            self.serial.read(waiting)
        self.serial.write(b"\r\x01")  # Ctrl-A
        if soft_reset:
            self._expect(RAW_REPL_BANNER + b">", timeout_overall)
            self.serial.write(b"\x04")  # Ctrl-D
            self._expect(b"soft reboot\r\n", timeout_overall)
        self._expect(RAW_REPL_BANNER, timeout_overall)
        self.in_raw_repl = True

    def _expect(self, ending: bytes, timeout_overall: float) -> None:
        data = self.read_until(1, ending, timeout_overall=timeout_overall)
        if not data.endswith(ending):
            raise TransportError(f"no {ending.decode().strip()!r} from the board (it sent {data[-80:]!r})")

    def exec_raw_no_follow(self, command: str | bytes) -> None:
        """Send code to the raw REPL and have it compiled and started (raw-paste mode where the
        board has it); its output is the caller's to read (follow)."""
        code = command if isinstance(command, bytes) else command.encode()
        self._expect(b">", PROTOCOL_TIMEOUT_S)
        if self.use_raw_paste:
            self.serial.write(b"\x05A\x01")  # ask for raw-paste mode
            answer = self._read_exact(2)
            if answer == b"R\x01":
                self.raw_paste_write(code)
                return
            if answer != b"R\x00":  # not understood at all: the board prints its raw prompt again
                self._expect(b"w REPL; CTRL-B to exit\r\n>", PROTOCOL_TIMEOUT_S)
            self.use_raw_paste = False
        for start in range(0, len(code), 256):  # plain raw REPL: 256 bytes at a time, paced
            self.serial.write(code[start:start + 256])
            time.sleep(0.01)
        self.serial.write(b"\x04")
        answer = self._read_exact(2)
        if answer != b"OK":
            raise TransportError(f"the raw REPL did not take the code (it answered {answer!r})")

    def raw_paste_write(self, command_bytes: bytes) -> None:
        """Raw-paste mode: the board grants a window of bytes at a time (\\x01 grants another,
        \\x04 ends early), then compiles what it got after our \\x04."""
        header = self._read_exact(2)
        if len(header) < 2:
            raise TransportError(f"no raw-paste window size from the board (got {header!r})")
        window = struct.unpack("<H", header)[0]
        allowed, sent = window, 0
        while sent < len(command_bytes):
            while allowed == 0 or self._unread or self.serial.in_waiting:
                flag = self._read_exact(1)
                if flag == b"\x01":
                    allowed += window
                elif flag == b"\x04":  # the board ended the paste (a compile error comes next)
                    self.serial.write(b"\x04")
                    return
                else:
                    raise TransportError(f"unexpected {flag!r} from the board during raw paste")
            chunk = command_bytes[sent:sent + allowed]
            self.serial.write(chunk)
            allowed -= len(chunk)
            sent += len(chunk)
        self.serial.write(b"\x04")
        self._expect(b"\x04", PROTOCOL_TIMEOUT_S)

    # -- REPL operations with timeouts and harness errors --------------------------------
    def enter_repl(self, soft_reset: bool = False, timeout: float = 10) -> None:
        """Interrupt whatever runs and enter the raw REPL, or raise BoardTimeout."""
        self._unread.clear()  # entering the REPL flushes what the board sent before
        try:
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
