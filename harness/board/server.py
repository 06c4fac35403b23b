"""A unix board served to the tools people already use: mpremote, Thonny, a serial terminal.

The board's REPL is relayed to a pty of its own (`/dev/pts/N`, for `mpremote connect
/dev/pts/N`) and to an RFC 2217 port on loopback (`rfc2217://127.0.0.1:PORT`, for tools that
take a URL). The relay adds what the unix port lacks to behave like a chip on a serial line:

- Ctrl-C from a client interrupts running code. The unix port reads 0x03 as a plain byte while
  code runs, so the relay also raises the interrupt: at the next simulator call (which any
  sleep or pin access makes), and with SIGINT when the process is still busy on the CPU a moment
  later (a bare `while True: pass`), never when it is at its prompt (SIGINT there ends the process).
- A process that ends (SystemExit, soft reset, a crash) is relaunched, as a chip reboots; the
  soft reset mpremote asks for is the board layer's own relaunch (see unix_board.py).

One RFC 2217 client at a time; the pty can be opened by one client at a time too.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import tty
from pathlib import Path

import serial
from serial.rfc2217 import PortManager

from .unix_board import UnixBoard

_READ_CHUNK = 4096
_SIGINT_AFTER_S = 0.1  # how long code may go on after a Ctrl-C before SIGINT interrupts it


class _SocketWriter:
    """The `connection` PortManager answers telnet negotiation through."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)


class _SimulatedLine:
    """The serial line settings an RFC 2217 client reads and sets (PortManager asks the port for
    them). A pty has no modem lines (their ioctls fail), so they are kept here: the client sees
    a line that accepts any baud rate, with DSR and CTS up, as a USB bridge shows it."""

    def __init__(self) -> None:
        self.baudrate, self.bytesize, self.parity, self.stopbits = 115200, 8, "N", 1
        self.rtscts = self.xonxoff = self.break_condition = False
        self.dtr = self.rts = False
        self.cts = self.dsr = True
        self.ri = self.cd = False

    def reset_input_buffer(self) -> None:
        pass  # the relay keeps no buffer of its own

    def reset_output_buffer(self) -> None:
        pass


class BoardServer:
    """Serve `board`'s REPL on a pty and an RFC 2217 port until close()."""

    def __init__(self, board: UnixBoard, host: str = "127.0.0.1", rfc2217_port: int = 0) -> None:
        self.board = board
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.device = os.ttyname(self._slave)  # clients open this; we keep the slave open so reads never fail
        self._listener = socket.create_server((host, rfc2217_port))
        self.url = f"rfc2217://{host}:{self._listener.getsockname()[1]}"
        self._client: tuple[socket.socket, PortManager] | None = None
        # Whether the board's last output ended at a prompt (raw ">", friendly ">>> "): a Ctrl-C
        # then only clears the line, and must not leave a simulator interrupt pending that would
        # strike the next program at its first shim call.
        self._at_prompt = True
        self._lock = threading.Lock()  # writes to the board from the two client sides
        self._closed = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # wakes the selecting threads at close()
        self._threads = [threading.Thread(target=loop, name=f"{board.name}-serve-{loop.__name__}", daemon=True)
                         for loop in (self._from_board, self._from_pty, self._from_network)]

    def start(self) -> "BoardServer":
        for thread in self._threads:
            thread.start()
        return self

    # -- towards the board -----------------------------------------------------------------
    def _to_board(self, data: bytes) -> None:
        if b"\x03" in data:
            self._interrupt()
        with self._lock:
            try:
                self.board.transport.serial.write(data)
            except (serial.SerialException, OSError):
                pass  # the board is relaunching: the client retries, as with a rebooting chip

    def _interrupt(self) -> None:
        if self._at_prompt:
            # Only the line to clear. The process may still be on the CPU for a moment (reading
            # the bytes before this Ctrl-C), and SIGINT at its prompt would end it: the client
            # taking the raw REPL then met a rebooted board (a friendly banner, not its prompt).
            return
        if self.board.sim is not None:
            self.board.sim.interrupt()  # at the next simulator call: safe for the heap
        # SIGINT for code that calls no shim (while True: pass), only if it is still running a
        # moment later: code that the simulator's interrupt ended is back at its prompt by then,
        # where SIGINT would end the process.
        timer = threading.Timer(_SIGINT_AFTER_S, self._sigint_if_busy, args=(self.board.port.pid,))
        timer.daemon = True
        timer.start()

    def _sigint_if_busy(self, pid: int | None) -> None:
        if not self._closed.is_set() and not self._at_prompt and pid == self.board.port.pid and _busy(pid):
            self.board.port.interrupt()

    def _from_pty(self) -> None:
        while not self._closed.is_set():
            ready, _, _ = select.select([self._master, self._wake_r], [], [])
            if self._master in ready:
                try:
                    data = os.read(self._master, _READ_CHUNK)
                except OSError:
                    continue
                if data:
                    self._to_board(data)

    def _from_network(self) -> None:
        while not self._closed.is_set():
            ready, _, _ = select.select([self._listener, self._wake_r], [], [])
            if self._listener not in ready:
                continue
            sock, _ = self._listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            manager = PortManager(_SimulatedLine(), _SocketWriter(sock))
            with self._lock:
                self._client = (sock, manager)
            try:
                while not self._closed.is_set():
                    ready, _, _ = select.select([sock, self._wake_r], [], [])
                    if sock not in ready:
                        continue
                    data = sock.recv(_READ_CHUNK)
                    if not data:
                        break
                    self._to_board(b"".join(manager.filter(data)))
            except OSError:
                pass
            finally:
                with self._lock:
                    self._client = None
                sock.close()

    # -- towards the clients ---------------------------------------------------------------
    def _from_board(self) -> None:
        while not self._closed.is_set():
            if self.board.crash_reason() is not None:
                self.board.reboot(hard=True)  # ended for good (a crash, SIGINT at its prompt): boot again
                continue
            try:
                data = self.board.transport.read_available()
            except (serial.SerialException, OSError):
                self.board.port.wait_settled(1.0)  # a relaunch in progress, or the end being handled
                continue
            if not data:
                continue
            self._at_prompt = data.endswith((b">", b">>> ", b"... "))
            os.write(self._master, data)
            with self._lock:
                client = self._client
            if client is not None:
                try:
                    client[0].sendall(b"".join(client[1].escape(data)))
                except OSError:
                    pass

    def close(self) -> None:
        """Stop relaying (the board itself is the caller's to close)."""
        self._closed.set()
        os.write(self._wake_w, b"x")
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=2)
        self._listener.close()
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            os.close(fd)


def _busy(pid: int | None) -> bool:
    """Whether the process is running on the CPU (state R), not waiting at its prompt or in a sleep."""
    if pid is None:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "R"
    except OSError:
        return False
