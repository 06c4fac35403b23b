# Run first in every launch of a simulated board (Simulator.startup_code()): connects the
# control channel (boot record, virtual clock, the inputs set so far) before the firmware runs,
# and points the u-prefixed aliases at the shims: the unix port resolves `import utime` or
# `import usocket` (umqtt.simple does) straight to its built-ins, which would bypass the
# board's clock and the publish stamps.
#
# The one import cycle among the simulated board's files is here, on purpose: at a REPL
# launched without this module (the board layer's REPL), importing any shim first must still
# set up every alias. machine and network import this module (downward); time, select and
# socket import it last thing, and it imports them: whichever of the three comes first, the
# other two are loaded to be aliased. No acyclic import graph can do that (the lowest of the
# three would have to load the others), and the port offers no other hook (`utime.py` on the
# path is never looked at). tests/test_sim_imports.py allows exactly these three edges.
import sys
import _simcore  # noqa: F401  (connects)
import _siminputs  # noqa: F401  (applies the inputs set so far; tracks the host's changes)
import time
import select
import socket
import os  # noqa: F401  (takes the board's root while it is the cwd; is uos too, see os)

for _name, _mod in (("utime", time), ("uselect", select), ("usocket", socket)):
    sys.modules[_name] = _mod

# ssl: the port's is frozen, and `.frozen` precedes this folder on MICROPYPATH, so the shim is
# imported with `.frozen` off the path; it stays `ssl` in sys.modules (see ssl.py).
_path = sys.path[:]
sys.path[:] = [_p for _p in _path if _p != ".frozen"]
sys.modules.pop("ssl", None)  # a REPL may have imported the port's before this ran
try:
    import ssl  # noqa: E402,F401
except ImportError:
    pass  # a port built without TLS: `import ssl` fails in the firmware as it would there
finally:
    sys.path[:] = _path

del _name, _mod, _path
