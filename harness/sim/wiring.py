"""A bench's wiring for a simulated board: which parts are attached and what the inputs read.

The format a firmware's manifest uses ("wiring"), and fleets per board:

    {"sensors": {"bme280@0x76": {"temperature": 21.5}}, "adc": {"34": 1.9}, "pins": {"25": 1}}
"""

from __future__ import annotations

from typing import Any

from ..errors import HarnessError


def apply_wiring(sim: Any, wiring: dict, where: str = "wiring") -> None:
    """Set a simulator's inputs from a wiring dict (the manifest's format): "sensors" maps
    "part@address" to its values, "adc" maps a pin to volts, "pins" a pin to a level."""
    if not isinstance(wiring, dict):
        raise HarnessError(f"{where}: a wiring dict ({{'sensors': ..., 'adc': ..., 'pins': ...}}), not "
                           f"{type(wiring).__name__}")
    unknown = set(wiring) - {"sensors", "adc", "pins"}
    if unknown:
        raise HarnessError(f"{where}: unknown key {', '.join(sorted(unknown))}; use sensors, adc, pins")
    try:
        for part, part_values in wiring.get("sensors", {}).items():
            name, _, address = part.partition("@")
            sim.sensor(name, address=int(address, 0) if address else None).set(**part_values)
        for pin, volts in wiring.get("adc", {}).items():
            sim.adc(int(pin)).set(volts)
        for pin, level in wiring.get("pins", {}).items():
            sim.pin(int(pin)).set(level)
    except (ValueError, TypeError, AttributeError) as e:
        raise HarnessError(f"{where}: {e}") from None
