"""The simulated ESP32's host end: the Simulator (control channel, boot records, virtual clock),
what a test sets through it (Signals, the pin/ADC/part/bus/WiFi handles), board profiles, and
the constants both ends share (reset exit codes, the ROM's reset lines).

Modules, each importing only the ones listed before it: profiles (board profiles and the
device-side folder), protocol (constants shared with the board), inputstate (the inputs the
host has set), inputs (Signals, the parts registry, the handles), simulator (the Simulator).
The board's own side is MicroPython code in simulated_boards/, run by the unix port.
"""

from .inputs import (AdcHandle, ByteHandle, PartHandle, PartInfo, PinHandle, Signal, SimulatorView,
                     WifiHandle, part_info)
from .inputstate import InputState
from .profiles import Profile, known_profiles, load_profile
from .protocol import (EXIT_BROWNOUT, EXIT_CODES, EXIT_DEEPSLEEP, EXIT_HARD_RESET, EXIT_SOFT_RESET,
                       EXIT_WDT, RESET_EXIT_CODES, ROM_RESET_LINES)
from .simulator import TIME_MODES, Publish, Simulator, chip_heap_on_host, shim_heap_bytes
from .wiring import apply_wiring

__all__ = [
    "Simulator", "Publish", "TIME_MODES", "chip_heap_on_host", "shim_heap_bytes",
    "Signal", "PinHandle", "AdcHandle", "PartHandle", "ByteHandle", "WifiHandle",
    "SimulatorView", "InputState", "PartInfo", "part_info",
    "Profile", "load_profile", "known_profiles",
    "EXIT_CODES", "EXIT_HARD_RESET", "EXIT_SOFT_RESET", "EXIT_DEEPSLEEP", "EXIT_BROWNOUT",
    "EXIT_WDT", "RESET_EXIT_CODES", "ROM_RESET_LINES", "apply_wiring",
]
