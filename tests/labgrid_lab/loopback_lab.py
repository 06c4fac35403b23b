"""A labgrid lab on loopback, for the tests and benchmarks/bench_labgrid.py: real labgrid and ser2net,
a simulated ESP32 standing in for the chip.

    with LoopbackLab() as lab:          # LG_COORDINATOR=lab.coordinator for the boards
        open_board("labgrid:hil-chip")  # or hil-chip-default, hil-empty (places.yaml)

    with LoopbackLab(chips=2) as lab:   # a second chip on place hil-chip2 (lab.second), for roles

- the chip: a simulated ESP32 (unix port under a Simulator) served on a pty by BoardServer, which
  behaves as a chip on a serial line does (Ctrl-C interrupts, an ended process boots again);
- ser2net (Debian's) exporting that pty with the settings of ser2net.yaml (tuned);
- labgrid-coordinator on a free loopback port, started with places.yaml in its folder;
- labgrid-exporter publishing the pty through that ser2net (NetworkSerialPort), the pty itself
  (RawSerialPort: the exporter starts a ser2net with ser2net's defaults when it is acquired), and a
  power switch (NetworkPowerPort, `simplerest` over HTTP, served here: off ends the chip's process,
  which its server boots again) (exporter.yaml).

With `chips=2` a second simulated chip, served the same way with its own ser2net and power switch,
stands on place hil-chip2 (exporter-chip2.yaml, places-chip2.yaml): roles on two places.

Every process is started through a Tether (it dies with the test run), the exporter with SIGTERM
as its parent-death signal so that it stops the ser2net it started; the folder is a tempdirs one.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from pathlib import Path

from micropython_hil import tempdirs
from micropython_hil.board.board import Board
from micropython_hil.board.server import BoardServer
from micropython_hil.sim.simulator import Simulator
from micropython_hil.tether import Tether

HERE = Path(__file__).resolve().parent
EXPORTER = "hil-lab"
PLACES = ("hil-chip", "hil-chip-default", "hil-empty")  # and hil-chip2 with chips=2
# The exporter's groups the coordinator must list before the lab counts as up.
GROUPS = {"chip-tuned", "chip-default", "chip-power"}
# Runs the exporter with SIGTERM, not the tether's SIGKILL, as its parent-death signal: labgrid's
# exporter stops the ser2net processes it started when it is terminated, not when it is killed.
_GRACEFUL = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
             "os.execv(sys.argv[1], sys.argv[1:])")


def missing() -> str | None:
    """Why the lab cannot run here, or None."""
    try:
        import labgrid  # noqa: F401
    except ImportError:
        return "labgrid is not installed (pip install -e '.[labgrid]'; .ci/run's labgrid step does)"
    if ser2net() is None:
        return "ser2net is not installed (apt-get install ser2net; .ci/run's labgrid step does)"
    return None


def ser2net() -> str | None:
    return shutil.which("ser2net") or next((p for p in ("/usr/sbin/ser2net",) if os.path.exists(p)), None)


def labgrid_tool(name: str) -> str:
    """A labgrid command, from the environment of the running Python first."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PowerSwitch:
    """An HTTP power switch in labgrid's `simplerest` model (GET /outlet/0/1 on, /outlet/0/0 off,
    /outlet/0 reads): `log` keeps what it was told; switching off calls `off`."""

    def __init__(self, off) -> None:
        self.log: list[str] = []
        self.on = True
        switch = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = self.path.strip("/").split("/")
                if len(parts) == 3:
                    switch.log.append(parts[2])
                    was_on, switch.on = switch.on, parts[2] == "1"
                    if was_on and not switch.on:
                        off()
                body = b"1" if switch.on else b"0"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="lab-power", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Chip:
    """A simulated ESP32 served on a pty as a chip, its own tuned ser2net and power switch: the
    lab's second chip (the first is the lab's own attributes, as the tests and bench know them)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sim = self.board = self.server = self.power = None
        self.ser2net_port = 0

    def start(self) -> "Chip":
        self.sim = Simulator()
        self.board = Board.unix(sim=self.sim, name=self.name)
        self.server = BoardServer(self.board).start()
        self.power = PowerSwitch(off=self._kill)
        return self

    @property
    def device(self) -> str:
        return self.server.device

    def pid(self) -> int | None:
        return self.board.port.pid

    def _kill(self) -> None:
        pid = self.board.port.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        for part in (self.power, self.server, self.board, self.sim):
            if part is not None:
                try:
                    part.close()
                except Exception:
                    pass


class LoopbackLab:
    """The lab, started by start() (or `with`), stopped by close(). `chips=2`: a second chip on
    place hil-chip2 (`second`)."""

    def __init__(self, chips: int = 1) -> None:
        if chips not in (1, 2):
            raise ValueError("the loopback lab has one or two chips")
        self.chips = chips
        self.second: Chip | None = None
        self.folder: Path | None = None
        self.tether: Tether | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.sim = self.chip = self.server = self.power = None
        self.coordinator = ""
        self.ser2net_port = 0
        self.env = {}

    # -- start -------------------------------------------------------------------------------
    def start(self) -> "LoopbackLab":
        try:
            self.folder = tempdirs.make_temp_dir("labgrid-lab")
            self.tether = Tether("hil-labgrid-lab")
            self.sim = Simulator()
            self.chip = Board.unix(sim=self.sim, name="lab-chip")
            self.server = BoardServer(self.chip).start()
            self.power = PowerSwitch(off=self._kill_chip)
            self._start_ser2net()
            if self.chips == 2:
                self.second = Chip("lab-chip2").start()
                self.second.ser2net_port = self._serve("ser2net2", "chip2", self.second.device)
            self._start_coordinator()
            self._start_exporter()
            self.env = {"LG_COORDINATOR": self.coordinator}
        except BaseException:
            self.close()
            raise
        return self

    @property
    def device(self) -> str:
        """The chip's pty."""
        return self.server.device

    def chip_pid(self) -> int | None:
        return self.chip.port.pid

    def _kill_chip(self) -> None:
        pid = self.chip.port.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def _fill(self, template: str, into: str | None = None, **fields) -> Path:
        text = string.Template((HERE / template).read_text()).substitute(**fields)
        path = self.folder / (into or template)
        path.write_text(text)
        return path

    def _spawn(self, name: str, argv: list[str], **kwargs) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")
        try:
            proc = self.tether.popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
        finally:
            log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        try:
            return (self.folder / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def _start_ser2net(self) -> None:
        self.ser2net_port = self._serve("ser2net", "chip", self.device)

    def _serve(self, proc: str, name: str, device: str) -> int:
        """A ser2net (ser2net.yaml's settings) exporting `device` on a free port; the port."""
        port = free_port()
        config = self._fill("ser2net.yaml", name=name, host="127.0.0.1", port=port, device=device,
                            into=f"{proc}.yaml")
        self._spawn(proc, [ser2net(), "-n", "-c", str(config), "-P", str(self.folder / f"{proc}.pid")])
        self._wait(lambda: _listening(port), proc)
        return port

    def _start_coordinator(self) -> None:
        port = free_port()
        self.coordinator = f"127.0.0.1:{port}"
        shutil.copy(HERE / "places.yaml", self.folder / "places.yaml")
        if self.second is not None:
            with open(self.folder / "places.yaml", "a") as places:
                places.write((HERE / "places-chip2.yaml").read_text())
        self._spawn("coordinator", [labgrid_tool("labgrid-coordinator"), "-l", self.coordinator], cwd=self.folder)
        self._wait(lambda: _listening(port), "coordinator")

    def _start_exporter(self) -> None:
        config = self._fill("exporter.yaml", ser2net_port=self.ser2net_port, device=self.device,
                            power_port=self.power.port)
        groups = set(GROUPS)
        if self.second is not None:
            more = self._fill("exporter-chip2.yaml", ser2net_port=self.second.ser2net_port,
                              power_port=self.second.power.port)
            config.write_text(config.read_text() + more.read_text())
            groups |= {"chip2-tuned", "chip2-power"}
        self._spawn("exporter", [sys.executable, "-c", _GRACEFUL, labgrid_tool("labgrid-exporter"), "-c",
                                 self.coordinator, "-n", EXPORTER, "--hostname", "127.0.0.1", str(config)],
                    cwd=self.folder)
        self._wait(lambda: groups <= self.exported_groups(), "exporter")

    def client(self, *args: str, user: str | None = None) -> str:
        """labgrid-client on the lab's coordinator, in a process of its own (this process's session
        with the coordinator is the boards'); its output. `user`: acquire or release as that user."""
        env = {**os.environ, **({"LG_USERNAME": user} if user else {})}
        proc = self.tether.popen([labgrid_tool("labgrid-client"), "-x", self.coordinator, *args], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        out, _ = proc.communicate(timeout=30)
        if proc.returncode:
            raise RuntimeError(f"labgrid-client {' '.join(args)}: exit {proc.returncode}: {out.strip()[-500:]}")
        return out

    def holder(self, place: str) -> str | None:
        """Who the coordinator says holds `place` (HOST/USER), or None."""
        for line in self.client("-p", place, "show").splitlines():
            if line.strip().startswith("acquired:"):
                value = line.split(":", 1)[1].strip()
                return None if value == "None" else value
        raise RuntimeError(f"labgrid-client show {place}: no 'acquired:' line")

    def exported_groups(self) -> set[str]:
        """The exporter's groups the coordinator lists."""
        try:
            out = self.client("resources")
        except RuntimeError:
            return set()
        return {line.split("/")[1] for line in out.splitlines() if line.startswith(f"{EXPORTER}/")}

    def _wait(self, ready, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            proc = self.procs.get(what)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the lab's {what} exited ({proc.returncode}):\n{self.log(what)[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the lab's {what} did not come up within {timeout:g} s:\n{self.log(what)[-2000:]}")
            time.sleep(0.1)

    # -- stop --------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop everything, the exporter first (it stops the ser2net it started)."""
        for name in ("exporter", "coordinator", "ser2net", "ser2net2"):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            kids = children(proc.pid)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pid in kids:  # what the exporter started and did not stop
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for part in (self.second, self.power, self.server, self.chip, self.sim, self.tether):
            if part is not None:
                try:
                    part.close()
                except Exception:
                    pass
        if self.folder is not None:
            tempdirs.remove(self.folder)
            self.folder = None

    def __enter__(self) -> "LoopbackLab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found
