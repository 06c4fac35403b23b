"""The one unix-port launcher (unix_port.Launch, started through a Tether) and SimProcess, which uses it."""

import os
import select
import subprocess
import sys

from micropython_hil.board.sim_process import SimProcess
from micropython_hil.board.unix_port import Launch, wait_gone


class FakeSim:
    """What a launch asks of a Simulator."""

    def launch_args(self):
        return ["-X", "heapsize=64K"]

    def micropypath(self):
        return ["/sim/shims"]

    def env(self):
        return {"MPSIM_CHANNEL": "127.0.0.1:1", "MPSIM_TOKEN": "t"}


def test_a_launch_runs_in_the_root_with_frozen_shims_and_lib_on_the_path(tmp_path):
    launch = Launch.for_root("/bin/micropython", tmp_path, FakeSim(), extra_args=["-c", "pass"],
                             extra_env={"MPSIM_CHANNEL": ""})
    assert launch.argv == ("/bin/micropython", "-X", "heapsize=64K", "-c", "pass")
    assert launch.cwd == tmp_path
    assert launch.env["MICROPYPATH"] == f".frozen:/sim/shims:{tmp_path}/lib"
    assert launch.env["MPSIM_TOKEN"] == "t" and launch.env["MPSIM_CHANNEL"] == ""  # extra_env wins
    assert launch.env["PATH"] == os.environ["PATH"]


def test_a_launch_without_simulator_is_the_plain_unix_port(tmp_path):
    launch = Launch.for_root("micropython", tmp_path)
    assert launch.argv == ("micropython",)
    assert launch.env["MICROPYPATH"] == f".frozen:{tmp_path}/lib"
    assert "MPSIM_CHANNEL" not in launch.env or launch.env["MPSIM_CHANNEL"] == os.environ.get("MPSIM_CHANNEL")


def test_sim_process_finds_micropython_without_the_venv_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    sp = SimProcess(tmp_path)
    try:
        r = sp.run(None, "import sys\nprint(__name__, sys.implementation.name)")
    finally:
        sp.close()
    assert r.returncode == 0 and r.stdout.split() == ["__main__", "micropython"]


CHILD = """
import sys, time
from pathlib import Path
from micropython_hil.board.sim_process import SimProcess

sp = SimProcess(Path(sys.argv[1]))
p = sp.start(None, "while True:\\n    pass\\n")
print(p.pid, flush=True)
time.sleep(60)
"""


def test_sim_process_children_die_with_a_sigkilled_python(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([parent.stdout], [], [], 30)
        line = parent.stdout.readline() if ready else ""
        assert line.strip().isdigit(), f"the child python printed no pid: {line!r} {parent.stderr.read() if not ready else ''}"
        pid = int(line)
        assert not wait_gone(pid, timeout=0.2), "micropython ended before its parent was killed"
        parent.kill()  # SIGKILL: no close(), no atexit; only the parent-death signal is left
        parent.wait()
    finally:
        parent.kill()
        parent.wait()
    assert wait_gone(pid, timeout=2.0), f"micropython pid {pid} outlived its SIGKILLed parent"
