"""SerialBoard: a chip (an ESP32) on a serial port or an rfc2217:// URL, as a Board.

The board layer's defaults are a chip's: Ctrl-C interrupts, nothing can crash in a way the host
sees, nothing can be relaunched. What is its own: finding the port, and resetting through the
ESP32's auto-reset circuit (hard) or the raw REPL's Ctrl-D (soft).
"""

from __future__ import annotations

from .board import DEFAULT_TIMEOUT, Board
from .transport import ReplTransport, find_esp32_port


class SerialBoard(Board, kind="serial"):
    """A chip on a serial port (a device path, or an rfc2217:// URL for a remote one)."""

    keeps_files = True  # its flash holds what earlier tests and runs left (see clean_flash)

    @classmethod
    def open(cls, device: str, name: str | None = None, baudrate: int = 115200,
             timeout: float = DEFAULT_TIMEOUT, reset: bool = False) -> "SerialBoard":
        """The board on `device` (`auto`: the first ESP32 USB bridge), ready in the raw REPL;
        `reset` pulses EN first."""
        if device == "auto":
            device = find_esp32_port()
        name = name or f"serial:{device}"
        transport = ReplTransport(device, name=name, baudrate=baudrate, reset_on_open=reset)
        return cls(transport, name, timeout)

    def reboot(self, hard: bool) -> bool:
        if hard:
            self.transport.hard_reset()  # EN pulsed through RTS: the chip boots from scratch
            return False
        return True  # a soft reset is the raw REPL's Ctrl-D, sent as the REPL is taken back
