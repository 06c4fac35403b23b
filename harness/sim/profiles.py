"""Board profiles of the simulated ESP32: the data files in simulated_boards/profiles/.

A profile names what the chip has (heap, pins, ADC channels, ids, flash, CPU clock), so code
that would fail on the chip fails the same way on the unix port. Add a board by adding a JSON
file there; `known_profiles()` lists them.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from ..errors import ProfileError

def _device_side_root() -> Path:
    """The simulated_boards/ folder: MicroPython files run by the unix port, never imported here.

    It ships inside the package as `micropython_hil.simulated_boards` (pyproject.toml maps the
    folder there), so an installed wheel and an editable checkout find it the same way.
    """
    spec = importlib.util.find_spec(__package__.rpartition(".")[0] + ".simulated_boards")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("micropython_hil.simulated_boards is missing: reinstall pytest-micropython-hil")
    return Path(list(spec.submodule_search_locations)[0])


SIM_ROOT = _device_side_root()
PROFILE_DIR = SIM_ROOT / "profiles"
_REQUIRED = ("heapsize", "pins", "input_only", "strapping", "adc", "mac", "flash_size", "cpu_freq")


@dataclass(frozen=True)
class Profile:
    """One simulated chip: what the shims on the board enforce, as the host sees it."""

    name: str
    heapsize: str
    pins: tuple[int, ...]
    input_only: tuple[int, ...]
    strapping: tuple[int, ...]
    adc: dict[int, str]
    mac: bytes
    flash_size: int
    cpu_freq: int
    data: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def unique_id(self) -> bytes:
        """machine.unique_id() on this chip: its base MAC."""
        return self.mac

    def check_pin(self, pin: int, *, output: bool = False, adc: bool = False) -> int:
        """The pin number if the chip has it (and it can do what is asked), else ProfileError."""
        if not isinstance(pin, int) or pin not in self.pins:
            raise ProfileError(f"profile {self.name}: the chip has no GPIO{pin}; "
                               f"its pins are {_ranges(self.pins)}")
        if output and pin in self.input_only:
            raise ProfileError(f"profile {self.name}: GPIO{pin} is input-only")
        if adc and pin not in self.adc:
            raise ProfileError(f"profile {self.name}: GPIO{pin} has no ADC channel; "
                               f"ADC pins are {_ranges(sorted(self.adc))}")
        return pin


def known_profiles() -> list[str]:
    """Names of the profiles available (the JSON files in simulated_boards/profiles/)."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load_profile(name: str) -> Profile:
    """Read profile `name`; an unknown name lists the known ones."""
    path = PROFILE_DIR / f"{name}.json"
    if not name or "/" in name or not path.is_file():
        raise ProfileError(f"unknown board profile {name!r}: known profiles are "
                           f"{', '.join(known_profiles())} (files in {PROFILE_DIR})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ProfileError(f"profile file {path} is not valid JSON: {e}") from None
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ProfileError(f"profile file {path} lacks {', '.join(missing)}")
    return Profile(name=name, heapsize=data["heapsize"], pins=tuple(data["pins"]),
                   input_only=tuple(data["input_only"]), strapping=tuple(data["strapping"]),
                   adc={int(k): v for k, v in data["adc"].items()},
                   mac=bytes.fromhex(data["mac"]), flash_size=data["flash_size"],
                   cpu_freq=data["cpu_freq"], data=data)


def _ranges(pins: Any) -> str:
    """'0-19, 21-23, 25' for a sorted pin list: short enough for a one-line error."""
    out: list[str] = []
    pins = sorted(pins)
    start = prev = None
    for p in pins + [None]:
        if p is not None and prev is not None and p == prev + 1:
            prev = p
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = p
    return ", ".join(out)
