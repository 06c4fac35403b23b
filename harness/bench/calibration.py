"""ESP32 estimates for unix-port timings: pystone on the board against a published ESP32 figure.

Calibration: the unix port is not an ESP32. `calibrate()` runs pystone_lowmem (installed at
bench time from micropython-lib's PyPI upload, never committed) on the board and compares it
with a published ESP32 figure: 1602 pystones/s at 240 MHz, MicroPython v1.12 on an ESP32 module
without PSRAM (micropython/micropython issue #6565; #5673 reports 1661). Assumption: the
interpreter's speed scales linearly with the CPU clock (so the 160 MHz esp32 profile expects
1068) and the firmware's code mixes operations like pystone does. Shim-heavy code (the simulated
ADC is Python, the chip's is C) makes the estimate pessimistic. Every number keeps the name of
the board that produced it; an estimate is labelled as one.
"""

from __future__ import annotations

from typing import Any

from .result import Calibration, board_id
from .stats import Stats
from ..deploy import packages
from ..errors import BenchError, BoardError, HarnessError

ESP32_PYSTONES = 1602.0      # pystones/s, see the module docstring for the source
ESP32_REF_HZ = 240_000_000   # the CPU clock that figure was measured at


def scaled(stats: Stats, factor: float) -> Stats:
    """Every time statistic multiplied by `factor` (an estimate for another chip)."""
    return Stats(n=stats.n, **{k: getattr(stats, k) * factor for k in Stats.LOCATION + ("stdev", "jitter")})


def calibrate(board: Any, loops: int = 500, repeats: int = 3) -> Calibration:
    """Run pystone_lowmem on the board (best of `repeats`) and derive the scale factor to the
    ESP32 profile the board simulates. A real board is its own reference (factor 1)."""
    name = getattr(board, "name", "board")
    try:
        lib = packages.ensure(["pystone_lowmem"])
    except HarnessError as e:
        raise BenchError(f"calibration needs micropython-lib's pystone_lowmem and it could not be "
                         f"installed: {str(e).splitlines()[0]}") from None
    board.put(lib / "pystone_lowmem.py", "lib/pystone_lowmem.py" if board.exists("lib") else "pystone_lowmem.py")
    # pystone_lowmem times itself with utime: give it the built-in clock, not the simulator's.
    code = ("import sys\n"
            "def _hil_bi(n):\n saved = sys.path[:]\n mine = sys.modules.pop(n, None)\n del sys.path[:]\n"
            " try:\n  return __import__(n)\n finally:\n  sys.path.extend(saved)\n"
            "  if mine is not None: sys.modules[n] = mine\n"
            "_hil_saved = sys.modules.get('utime')\nsys.modules['utime'] = _hil_bi('time')\n"
            "sys.modules.pop('pystone_lowmem', None)\nimport pystone_lowmem\n"
            "if _hil_saved is None: sys.modules.pop('utime')\nelse: sys.modules['utime'] = _hil_saved\n"
            "import gc\ngc.collect()\n")
    try:
        board.exec(code)
        ms, _ = board.eval(f"pystone_lowmem.pystones({loops})", timeout=120)
        # pystone times in whole milliseconds: run long enough (~200 ms) for 0.5 % resolution.
        loops = max(loops, int(loops * 200 / max(ms, 1)))
        best = max(board.eval(f"pystone_lowmem.pystones({loops})[1]", timeout=120) for _ in range(repeats))
        platform = board.eval("__import__('sys').platform")
        board.exec("del pystone_lowmem\nsys.modules.pop('pystone_lowmem', None)\ngc.collect()")
    except BoardError as e:
        raise BenchError(f"{name}: calibration failed: {str(e).splitlines()[0]}") from None
    if not best:
        raise BenchError(f"{name}: pystone ran too fast to time with {loops} loops; raise loops=")
    bid = board_id(board, platform)
    sim = getattr(board, "sim", None)
    if sim is None:
        return Calibration(name, bid, float(best), name, float(best), 1.0)
    ref_hz = sim.profile.cpu_freq
    ref = ESP32_PYSTONES * ref_hz / ESP32_REF_HZ
    label = f"{sim.profile.name} profile ({ref_hz / 1e6:.0f} MHz)"
    return Calibration(name, bid, float(best), label, ref, best / ref)
