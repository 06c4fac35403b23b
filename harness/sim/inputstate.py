"""The inputs a test has set on the simulated board, as the host keeps them, and the one way to
change them.

Pin levels, ADC volts, attached I2C parts with their values and trimming, failed parts, bytes
fed to UART/SPI, the access point's configuration and outage. Each launch receives all of them
in its boot record, so inputs survive resets; each change is also forwarded at once to the
board running now. The Simulator (channel, boot record) and the test-facing handles
(inputs.py) share one InputState: the handles change inputs only through its methods, and its
lock is the simulator's, so a boot record and the changes around it never interleave.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from ..errors import SimulatorError

# How an InputState reaches the board: send(message, need_board). need_board=True raises
# SimulatorError when no board is connected; otherwise the message is dropped then (the next
# launch gets the input in its boot record instead).
Send = Callable[[dict, bool], None]


class InputState:
    """The host's record of the board's inputs, the lock that guards it together with the
    channel, and a method per kind of input that records a change and forwards it."""

    def __init__(self, send: Send, wifi_connect_s: float) -> None:
        self.lock = threading.RLock()
        self._send = send
        self._pins: dict[int, Any] = {}
        self._adc: dict[int, Any] = {}
        self._parts: dict[int, dict] = {}
        self._failed: dict[int, str] = {}
        self._uart_rx: dict[int, bytearray] = {}
        self._wifi: dict[str, Any] = {"connect_s": wifi_connect_s, "networks": None, "scan": []}
        self._wifi_changes = 0  # drops and restores sent: the board's report of the latest counts

    def boot_fields(self) -> dict[str, Any]:
        """The inputs as the boot record carries them (call with `lock` held: the dicts are live
        and the record must be sent before anything changes them)."""
        return {"pins": self._pins, "adc": self._adc, "parts": self._parts,
                "failed": self._failed, "wifi": self._wifi,
                "uart": {k: bytes(v).hex() for k, v in self._uart_rx.items()}}

    def set_pin(self, pin: int, level: int | dict) -> None:
        """Drive GPIO `pin` to a level (0/1) or a Signal dict."""
        with self.lock:
            self._pins[pin] = level
            self._send({"t": "pin", "id": pin, "v": level}, False)

    def set_adc(self, pin: int, volts: float | dict) -> None:
        """Put `volts` (a number or a Signal dict) on ADC pin `pin`."""
        with self.lock:
            self._adc[pin] = volts
            self._send({"t": "adc", "id": pin, "v": volts}, False)

    def attach_part(self, address: int, name: str) -> None:
        """Put simulated part `name` on the I2C bus at `address` (again: nothing changes);
        SimulatorError if another part holds the address."""
        with self.lock:
            spec = self._parts.get(address)
            if spec is not None and spec["name"] != name:
                raise SimulatorError(f"I2C address {address:#x} already holds a {spec['name']}")
            if spec is None:
                self._parts[address] = {"name": name, "values": {}}
                self._send({"t": "part", "addr": address, "name": name, "values": {}}, False)

    def set_part_values(self, address: int, values: dict[str, Any]) -> None:
        """Set measured values of the part attached at `address` (the others keep theirs)."""
        with self.lock:
            spec = self._parts[address]
            spec["values"].update(values)
            self._send({"t": "part", "addr": address, "name": spec["name"], "values": values},
                       False)

    def set_part_trim(self, address: int, words: dict[str, int]) -> None:
        """Give the part attached at `address` its own trimming words (the others keep theirs)."""
        with self.lock:
            spec = self._parts[address]
            spec.setdefault("trim", {}).update(words)
            self._send({"t": "part", "addr": address, "name": spec["name"], "values": {},
                        "trim": words}, False)

    def fail_part(self, address: int, mode: str) -> None:
        """The part at `address` stops answering: "nack" (ENODEV) or "timeout" (ETIMEDOUT)."""
        with self.lock:
            self._failed[address] = mode
            self._send({"t": "i2cfail", "addr": address, "on": mode}, False)

    def recover_part(self, address: int) -> None:
        """The part at `address` answers again."""
        with self.lock:
            self._failed.pop(address, None)
            self._send({"t": "i2cfail", "addr": address, "on": False}, False)

    def feed(self, kind: str, bus: int, data: bytes) -> None:
        """Bytes the firmware will read from UART(bus) (kind "uart") or SPI(bus) (kind "spi")."""
        key = bus if kind == "uart" else 1000 + bus  # the board keeps SPI feeds at 1000 + id
        with self.lock:
            self._uart_rx.setdefault(key, bytearray()).extend(data)
            self._send({"t": "uart", "id": key, "data": bytes(data).hex()}, False)

    def configure_wifi(self, cfg: dict[str, Any]) -> None:
        """Change the access point's configuration (networks, connect_s, scan); others keep."""
        with self.lock:
            self._wifi.update(cfg)
            self._send({"t": "wifi", "cfg": cfg}, False)

    def drop_wifi(self, refuse_for: float | None) -> None:
        """The link drops now and the AP refuses reconnects for `refuse_for` board seconds
        (None: until restore_wifi). The drop happens on the running board (SimulatorError: no
        board), which stamps it with its clock and reports it back (note_wifi_outage) for
        later launches: the outage outlasts a reset."""
        with self.lock:
            self._wifi_changes += 1
            self._send({"t": "wifi_drop", "refuse_s": refuse_for, "n": self._wifi_changes}, True)

    def restore_wifi(self) -> None:
        """The access point is back now. Without a board running, the next launch finds it."""
        with self.lock:
            self._wifi_changes += 1
            if self._wifi.get("dropped_at") is not None:
                self._wifi["refuse_until"] = 0  # until the board reports its own clock's "now"
            self._send({"t": "wifi_restore", "n": self._wifi_changes}, False)

    def note_wifi_outage(self, n: int, dropped_at: int | None, refuse_until: int) -> None:
        """The board's report of the outage in board microseconds, after drop or restore
        number `n`; an older report (a later change is on its way) is ignored."""
        with self.lock:
            if n == self._wifi_changes:
                self._wifi.update(dropped_at=dropped_at, refuse_until=refuse_until)
