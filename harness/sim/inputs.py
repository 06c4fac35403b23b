"""What a test sets and reads on the simulated ESP32: time-varying input Signals, the parts
registry as the host sees it, and the handles `sim.pin(n)`, `sim.adc(n)`, `sim.sensor(...)`,
`sim.uart(n)`/`sim.spi(n)` and `sim.wifi` return.

The handles check what the test asks against the chip (levels, ranges, ids) and change inputs
only through the simulator's InputState; they see the simulator as `SimulatorView`, so this
module does not import the simulator (which imports it).
"""

from __future__ import annotations

import ast
import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import SimulatorError
from .inputstate import InputState
from .profiles import Profile


class SimulatorView(Protocol):
    """What the handles use of a Simulator: its inputs, its profile, the outputs it recorded
    and its I2C fault switches."""

    inputs: InputState
    profile: Profile
    pin_levels: dict[int, int]
    pin_history: dict[int, list[tuple[int, int]]]
    pwm: dict[int, dict]

    def fail_i2c(self, address: int, mode: str = "nack") -> None: ...

    def recover_i2c(self, address: int) -> None: ...


class Signal:
    """Inputs that change over time, evaluated on the board from its own clock (no round trips).

    Time starts when the board receives the signal (or at boot, for one set before launch)."""

    @staticmethod
    def sine(mean: float, amplitude: float, period_s: float) -> dict:
        _positive("period_s", period_s)
        return {"kind": "sine", "mean": mean, "amplitude": amplitude, "period": period_s}

    @staticmethod
    def square(low: float, high: float, period_s: float, duty: float = 0.5) -> dict:
        _positive("period_s", period_s)
        if not 0 <= duty <= 1:
            raise SimulatorError(f"Signal.square: duty {duty!r} must be within 0..1")
        return {"kind": "square", "low": low, "high": high, "period": period_s, "duty": duty}

    @staticmethod
    def ramp(start: float, end: float, duration_s: float) -> dict:
        _positive("duration_s", duration_s)
        return {"kind": "ramp", "start": start, "end": end, "duration": duration_s}

    @staticmethod
    def steps(points: list[tuple[float, float]]) -> dict:
        if not points or any(b[0] < a[0] for a, b in zip(points, points[1:])):
            raise SimulatorError("Signal.steps: give [(time_s, value), ...] sorted by time")
        return {"kind": "steps", "steps": [[float(t), v] for t, v in points]}


def _positive(name: str, v: float) -> None:
    if not v > 0:
        raise SimulatorError(f"Signal: {name} must be > 0, got {v!r}")


def _bounds(v: Any) -> tuple[float, float]:
    """The range of values an input (a number or a Signal dict) can take."""
    if not isinstance(v, dict):
        return v, v
    k = v["kind"]
    if k == "sine":
        return v["mean"] - abs(v["amplitude"]), v["mean"] + abs(v["amplitude"])
    if k == "square":
        return min(v["low"], v["high"]), max(v["low"], v["high"])
    if k == "ramp":
        return min(v["start"], v["end"]), max(v["start"], v["end"])
    vals = [p[1] for p in v["steps"]]
    return min(vals), max(vals)


@dataclass(frozen=True)
class PartInfo:
    """What the host knows of a simulated part, read from its file without running it."""

    name: str
    path: Path
    addresses: tuple[int, ...]
    ranges: dict[str, tuple[float, float]]
    trim: dict[str, tuple[int, int, int]]


def part_info(name: str, dirs: list[Path]) -> PartInfo:
    """Find part `name` in the parts folders and read its NAME/ADDRESSES/RANGES literals."""
    for d in dirs:
        path = d / f"{name}.py"
        if path.is_file():
            return _read_part(name, path, path.stat().st_mtime_ns)
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.py")
                    if not p.stem.startswith("_")})
    raise SimulatorError(f"unknown simulated part {name!r}: known parts are {', '.join(known)} "
                         f"(add one as a file in {dirs[-1]})")


_PARSE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=64)
def _read_part(name: str, path: Path, mtime_ns: int) -> PartInfo:
    """A part file's literals, read once per version of the file (`mtime_ns` keys the cache).
    Parsed under a lock: CPython 3.11's ast can fail when two threads parse at once (a fleet
    wiring its boards), cpython#106905."""
    with _PARSE_LOCK:
        lits: dict[str, Any] = {}
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                    isinstance(node.targets[0], ast.Name) and \
                    node.targets[0].id in ("ADDRESSES", "RANGES", "TRIM"):
                lits[node.targets[0].id] = ast.literal_eval(node.value)
        if not {"ADDRESSES", "RANGES"} <= set(lits):
            raise SimulatorError(f"part file {path} must define ADDRESSES and RANGES literals")
        return PartInfo(name, path, tuple(lits["ADDRESSES"]),
                        {k: tuple(v) for k, v in lits["RANGES"].items()},
                        {k: tuple(v) for k, v in lits.get("TRIM", {}).items()})


class PinHandle:
    """One GPIO as the test sees it."""

    def __init__(self, sim: SimulatorView, pin: int) -> None:
        self.sim, self.id = sim, pin

    def set(self, level: int | dict) -> None:
        """Drive the pin (0/1, or a Signal.square etc.); a change fires the firmware's irq."""
        if not isinstance(level, dict) and level not in (0, 1, True, False):
            raise SimulatorError(f"pin {self.id}: level must be 0 or 1 (or a Signal), got {level!r}")
        self.sim.inputs.set_pin(self.id, level if isinstance(level, dict) else int(level))

    def pulse(self, level: int = 1) -> None:
        """Two edges (to `level` and back): triggers an IRQ_RISING or IRQ_FALLING handler."""
        self.set(level)
        self.set(1 - level)

    @property
    def level(self) -> int | None:
        """The level the firmware last drove (None if it never drove it)."""
        return self.sim.pin_levels.get(self.id)

    @property
    def history(self) -> list[tuple[int, int]]:
        """(board_time_us, level) of every change the firmware drove."""
        return list(self.sim.pin_history.get(self.id, []))

    @property
    def pwm(self) -> dict | None:
        """{'freq': Hz, 'duty_u16': 0..65535} as the firmware last set (None: no PWM)."""
        return self.sim.pwm.get(self.id)


class AdcHandle:
    """One ADC pin: the voltage at it."""

    def __init__(self, sim: SimulatorView, pin: int) -> None:
        self.sim, self.id = sim, pin

    def set(self, volts: float | dict) -> None:
        lo, hi = _bounds(volts)
        if lo < 0 or hi > 3.6:
            raise SimulatorError(f"ADC pin {self.id}: {volts!r} V is outside 0..3.6 V "
                                 "(the ESP32's pins take at most VDD + 0.3 V)")
        self.sim.inputs.set_adc(self.id, volts)


class PartHandle:
    """A simulated I2C part: what it measures, and its faults."""

    def __init__(self, sim: SimulatorView, info: PartInfo, address: int) -> None:
        self.sim, self.info, self.address = sim, info, address

    def set(self, **values: float | dict) -> None:
        """Set measured values in the part's units (e.g. temperature=21.5, pressure=1013.2)."""
        for k, v in values.items():
            if k not in self.info.ranges:
                raise SimulatorError(f"{self.info.name} has no value {k!r}: it has "
                                     f"{', '.join(self.info.ranges)}")
            lo, hi = self.info.ranges[k]
            vlo, vhi = _bounds(v)
            if vlo < lo or vhi > hi:
                raise SimulatorError(f"{self.info.name} {k}={v!r} is outside the part's range "
                                     f"{lo}..{hi}")
        self.sim.inputs.set_part_values(self.address, values)

    def trim(self, **words: int) -> None:
        """Give this chip its own trimming words (e.g. dig_T2=26624), as each real chip has."""
        if not self.info.trim:
            raise SimulatorError(f"{self.info.name} has no trimming words to set")
        for k, v in words.items():
            if k not in self.info.trim:
                raise SimulatorError(f"{self.info.name} has no trimming word {k!r}: it has "
                                     f"{', '.join(self.info.trim)}")
            _, lo, hi = self.info.trim[k]
            if not isinstance(v, int) or not lo <= v <= hi:
                raise SimulatorError(f"{self.info.name} {k}={v!r} must be an int in {lo}..{hi}")
        self.sim.inputs.set_part_trim(self.address, words)

    def fail(self, mode: str = "nack") -> None:
        """The part stops answering (until recover())."""
        self.sim.fail_i2c(self.address, mode)

    def recover(self) -> None:
        self.sim.recover_i2c(self.address)


class ByteHandle:
    """A UART or SPI bus: bytes in (feed) and out (written)."""

    def __init__(self, sim: SimulatorView, kind: str, bus: int, written: dict) -> None:
        ids = sim.profile.data["uart_ids" if kind == "uart" else "spi_ids"]
        if bus not in ids:
            raise SimulatorError(f"profile {sim.profile.name} has no {kind.upper()}({bus}); "
                                 f"it has {ids}")
        self.sim, self.kind, self.id, self._written = sim, kind, bus, written

    def feed(self, data: bytes) -> None:
        self.sim.inputs.feed(self.kind, self.id, data)

    @property
    def written(self) -> bytes:
        return bytes(self._written.get(self.id, b""))


class WifiHandle:
    """The access point(s) the board's WLAN sees."""

    def __init__(self, sim: SimulatorView) -> None:
        self.sim = sim

    def configure(self, networks: dict[str, str | None] | None = None,
                  connect_s: float | None = None,
                  scan: list[tuple[str, int, int, int]] | None = None) -> None:
        """networks={ssid: password or None}: others give STAT_NO_AP_FOUND, a wrong password
        STAT_WRONG_PASSWORD (None accepts any ssid); connect_s: board seconds to connect;
        scan=[(ssid, channel, rssi, authmode)]."""
        cfg: dict[str, Any] = {"networks": networks}
        if connect_s is not None:
            if connect_s < 0:
                raise SimulatorError(f"wifi connect_s must be >= 0, got {connect_s}")
            cfg["connect_s"] = connect_s
        if scan is not None:
            cfg["scan"] = [list(s) for s in scan]
        self.sim.inputs.configure_wifi(cfg)

    def drop(self, refuse_for: float | None = 0.0) -> None:
        """The link drops now, as when the access point goes away, and the AP refuses
        reconnects for `refuse_for` board seconds (None: until `restore()`).

        As on the chip: the firmware's open connections are lost (their next read or write
        raises OSError ECONNABORTED, then ENOTCONN), connects fail (EHOSTUNREACH) and names do
        not resolve (OSError -202) until the link is back, `connect_s` after the AP is; the
        real connections go quiet, so the broker fires a last will after 1.5 x keepalive.
        The outage outlasts resets of the board."""
        if refuse_for is not None and not refuse_for >= 0:
            raise SimulatorError(f"wifi.drop: refuse_for must be >= 0 (or None), got {refuse_for}")
        self.sim.inputs.drop_wifi(refuse_for)

    def restore(self) -> None:
        """The access point is back now (ending a drop early, or one with refuse_for=None):
        the board has its link again `connect_s` later, and the firmware can reconnect."""
        self.sim.inputs.restore_wifi()
