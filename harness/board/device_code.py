"""MicroPython source the harness sends to a board: how a script is run as the chip runs
main.py, and the helpers files and deploy() define on the board.

Kept apart from the host code that sends it so the board layer, the unix-port relaunch after a
simulated reset and SimProcess all run a script the same way.
"""

from __future__ import annotations

# Runs a script the way the chip runs main.py at boot: __name__ == "__main__", and tracebacks
# that name the file.
_RUN_SCRIPT = "exec(compile(open({path!r}).read(), {path!r}, 'exec'), {{'__name__': '__main__'}})"


def run_script(path: str) -> str:
    """One statement that runs the script at `path` (relative to the board's root) as main.py runs."""
    return _RUN_SCRIPT.format(path=path)


def boot_scripts() -> str:
    """What a chip runs after a reset: boot.py then main.py, each if present."""
    lines = ["import os"]
    for script in ("boot.py", "main.py"):
        lines += [f"if {script!r} in os.listdir():", " " + run_script(script)]
    return "\n".join(lines) + "\n"


# Defines _mkdirs(path): create a folder and its parents, no error if they exist.
MKDIRS = """\
def _mkdirs(p):
 import os
 q = ''
 for part in p.split('/'):
  q = q + '/' + part if q else part
  try: os.mkdir(q)
  except OSError: pass
"""

# Defines _rm(path, recursive): remove a file, or a folder (with everything in it if recursive).
RMTREE = """\
def _rm(p, rec):
 import os
 if os.stat(p)[0] & 0x4000:
  if rec:
   for n in os.listdir(p): _rm(p + '/' + n, True)
  os.rmdir(p)
 else:
  os.remove(p)
"""

# Defines _wipe(folder, keep, mounts): remove everything in a folder (the board's root: '')
# except the paths in `keep` and the folders on the way to them; the paths removed (folders end
# in '/'). A folder on another filesystem (an SD card mounted at /sd) is left whole and added to
# `mounts`: its statvfs geometry differs from the root's. Needs _rm (RMTREE).
WIPE = """\
def _wipe(d, keep, mounts, fs=None):
 import os
 fs = fs or os.statvfs('.')[:3]
 gone = []
 for e in list(os.ilistdir(d or '.')):
  p = d + '/' + e[0] if d else e[0]
  if p in keep: continue
  if e[1] & 0x4000:
   if os.statvfs(p)[:3] != fs:
    mounts.append(p)
    continue
   if any(k.startswith(p + '/') for k in keep):
    gone += _wipe(p, keep, mounts, fs)
    continue
   _rm(p, True)
   gone.append(p + '/')
  else:
   os.remove(p)
   gone.append(p)
 return gone
"""

# Defines _hh(names): {name: SHA-256 hex} of the named files that exist, read 1 KB at a time.
HASHER = """\
def _hh(names):
 import hashlib, binascii
 out = {}
 buf = bytearray(1024)
 for n in names:
  try: f = open(n, 'rb')
  except OSError: continue
  h = hashlib.sha256()
  while 1:
   k = f.readinto(buf)
   if not k: break
   h.update(buf[:k])
  f.close()
  out[n] = binascii.hexlify(h.digest()).decode()
 return out
"""
