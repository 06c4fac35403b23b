"""Constants the host and the simulated board share: reset exit codes and the ROM's reset lines.

Both ends read them from one file, simulated_boards/_simprotocol.py: the board imports it, the
host reads its literals without running MicroPython code (ast), as profiles and parts are read.
"""

from __future__ import annotations

import ast

from .profiles import SIM_ROOT


def _literals(path) -> dict:
    """The top-level `NAME = literal` assignments of a file."""
    tree = ast.parse(path.read_text(), str(path))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}


_SHARED = _literals(SIM_ROOT / "_simprotocol.py")

EXIT_CODES: dict[str, int] = _SHARED["EXIT_CODES"]            # cause -> process exit code
EXIT_HARD_RESET = EXIT_CODES["hard"]        # machine.reset()
EXIT_SOFT_RESET = EXIT_CODES["soft"]        # machine.soft_reset()
EXIT_DEEPSLEEP = EXIT_CODES["deepsleep"]    # machine.deepsleep(ms): relaunch after the (virtual) sleep
EXIT_BROWNOUT = EXIT_CODES["brownout"]      # sim.brownout(): power dip, RTC memory lost
EXIT_WDT = EXIT_CODES["wdt"]                # machine.WDT not fed in time
RESET_EXIT_CODES: dict[int, str] = {code: cause for cause, code in EXIT_CODES.items()}
ROM_RESET_LINES: dict[int, str] = {EXIT_CODES[cause]: line
                                   for cause, line in _SHARED["ROM_RESET_LINES"].items()}
