# Run first in every launch of a simulated board (Simulator.startup_code()): connects the
# control channel (boot record, virtual clock) before the firmware runs, and points the
# u-prefixed aliases at the shims: the unix port resolves `import utime` or `import usocket`
# (umqtt.simple does) straight to its built-ins, which would bypass the board's clock and
# the publish stamps.
import sys
import _simcore  # noqa: F401  (connects)
import time
import select
import socket

for _name, _mod in (("utime", time), ("uselect", select), ("usocket", socket)):
    sys.modules[_name] = _mod

del _name, _mod
