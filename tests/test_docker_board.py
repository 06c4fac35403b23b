"""A simulated board whose MicroPython process runs in a container (`--board docker:PROFILE`,
the `docker_board` fixture): the same REPL, simulator channel and firmware as a local board, its
own network with the kernel faults of a KernelLink, and nothing left once it is closed. Real
engine, real containers; skips, saying why, where no engine answers or namespaces cannot be made."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from micropython_hil.containers import LABEL, ROLE_LABEL, Engine, run_id
from micropython_hil.netfault.container_board import open_docker_board
from micropython_hil.netfault.kernel import unavailable
from micropython_hil.sim.simulator import Simulator

WEATHER = "firmware_under_test/weather_station"
_WHY = Engine.unavailable() or (f"kernel link: {unavailable()}" if unavailable() else None)
pytestmark = pytest.mark.skipif(bool(_WHY), reason=f"docker board: {_WHY}")


@pytest.fixture
def board(docker_board):
    """Every board-based fixture of this module (sim, start_firmware) uses the container's board."""
    return docker_board


def host_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def test_the_board_runs_in_its_container_through_the_same_repl(board, docker_engine):
    container = docker_engine.client.containers.get(board.container.id)
    assert container.labels[LABEL] == run_id() and container.labels[ROLE_LABEL] == "board"
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"  # its own namespace, wired by the harness
    pid = board.port.pid
    assert container.id in Path(f"/proc/{pid}/cgroup").read_text()  # a process of the container
    own_ns = os.readlink(f"/proc/{container.attrs['State']['Pid']}/ns/net")
    assert os.readlink(f"/proc/{pid}/ns/net") == own_ns != os.readlink("/proc/self/ns/net")
    assert board.eval("1 + 1") == 2
    rtts = []
    for _ in range(50):
        t = time.perf_counter()
        board.exec("x = 1")
        rtts.append(time.perf_counter() - t)
    assert statistics.median(rtts) < 0.02, f"exec round trip {statistics.median(rtts) * 1e3:.1f} ms"
    board.sim.adc(34).set(0.5)  # the simulator's channel reaches the container over the wire
    assert abs(board.eval("__import__('machine').ADC(__import__('machine').Pin(34)).read_uv()") - 500_000) < 20_000
    board.put_bytes(b"from the host", "hello.txt")  # the flash folder is the container's working folder
    assert (board.root / "hello.txt").read_bytes() == b"from the host"
    board.reset()  # a new process in the same container
    assert board.port.pid != pid and board.eval("open('hello.txt').read()") == "from the host"


@pytest.fixture
def wired(board):
    """The weather station's parts, as a bench would have them wired."""
    board.sim.sensor("bme280", address=0x76).set(temperature=20.0, pressure=1000.0, humidity=50.0)
    board.sim.adc(34).set(1.9)
    return board


@pytest.mark.firmware(WEATHER)
@pytest.mark.sim(time="fast")
def test_the_weather_station_publishes_from_inside_its_container(wired, start_firmware, telemetry):
    device = start_firmware(extra={"interval_s": 60})
    readings = telemetry.collect(3, device.topic("telemetry"), timeout=30)
    assert [r.json()["temperature_c"] for r in readings] == [20.0] * 3
    telemetry.assert_sequence(device.topic("telemetry"), min_count=3)


def timed_upload(board, kb: int) -> tuple[float, int, str]:
    """Seconds to send `kb` kB from the board to a host loopback server, bytes received, peer."""
    server = socket.create_server(("127.0.0.1", 0))
    got = []

    def drain():
        conn, (peer, _) = server.accept()
        with conn:
            total = 0
            while chunk := conn.recv(65536):
                total += len(chunk)
            got.append((total, peer))

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    with server:
        start = time.monotonic()
        board.exec(f"import socket\ns = socket.socket()\ns.connect(socket.getaddrinfo('127.0.0.1', "
                   f"{server.getsockname()[1]})[0][-1])\nfor _ in range({kb}):\n    s.write(b'x' * 1000)\n"
                   f"s.close()", timeout=30)
        thread.join(60)
        assert got, f"{kb} kB did not arrive within 60 s"
        return time.monotonic() - start, *got[0]


@pytest.mark.sim(time="real")
def test_kernel_faults_apply_to_the_containers_link(board):
    fast, size, peer = timed_upload(board, 20)
    assert size == 20_000 and peer == board.network.addresses["board_wlan"]  # over its WiFi path
    with board.network.rate(20_000, direction="up"):
        slow, size, _ = timed_upload(board, 30)
    assert size == 30_000 and slow > 0.9 > fast, f"30 kB at 20 kB/s took {slow:.2f} s (unlimited: {fast:.2f} s)"
    # 10 % lost on the path: TCP retransmits (with backoff: 20 % lost made 20 kB take over 30 s
    # now and then on a busy host).
    with board.network.loss(10) as loss:
        _, size, _ = timed_upload(board, 20)
    assert size == 20_000 and loss.dropped > 0  # lost in transit, retransmitted by TCP
    assert not board.network.faults


def test_closing_leaves_no_container_folder_or_link(docker_engine):
    sim = Simulator()
    board = open_docker_board(sim, name="closing")
    container, folder, links = board.container, board.root.parent, board.network.host_interfaces
    assert folder.is_dir() and all(name in host_links() for name in links)
    board.close()
    sim.close()
    with pytest.raises(docker_engine.errors.NotFound):
        docker_engine.client.containers.get(container.id)
    assert not folder.exists()
    assert wait_until(lambda: not any(name in host_links() for name in links))


def test_a_sigkilled_runs_board_is_removed_by_the_next_run(docker_engine):
    code = ("import time; from micropython_hil.netfault.container_board import open_docker_board; "
            "from micropython_hil.sim.simulator import Simulator; b = open_docker_board(Simulator()); "
            "print(b.container.id, *b.network.host_interfaces, flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        container_id, *links = child.stdout.readline().split()
    finally:
        child.kill()  # SIGKILL: no teardown runs; the engine keeps the container
        child.wait()
        child.stdout.close()
    assert docker_engine.client.containers.get(container_id).status == "running"
    assert wait_until(lambda: not any(name in host_links() for name in links[:1]))  # its air died with it
    # What the next run's first docker board (or docker broker) on this engine does:
    assert docker_engine.client.containers.get(container_id).name in docker_engine.remove_leftovers()
    with pytest.raises(docker_engine.errors.NotFound):
        docker_engine.client.containers.get(container_id)
    assert wait_until(lambda: not any(name in host_links() for name in links))


def wait_until(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


SCENARIO = """
import pytest

@pytest.fixture
def wired(board):
    board.sim.sensor("bme280", address=0x76).set(temperature=21.5, pressure=1000.0, humidity=50.0)
    board.sim.adc(34).set(1.9)
    return board

@pytest.mark.sim(time="fast")
def test_station(wired, start_firmware, telemetry):
    device = start_firmware(extra={"interval_s": 60})
    telemetry.collect(2, device.topic("telemetry"), timeout=30)
    print("CONTAINER", wired.container.name, wired.kind)
"""


def test_the_board_option_runs_a_scenario_in_a_container(pytester, docker_engine):
    pytester.makepyfile(test_scenario=SCENARIO)
    firmware = Path(__file__).resolve().parents[1] / WEATHER
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "--board=docker:esp32",
                                           f"--firmware={firmware}", timeout=120)
    result.assert_outcomes(passed=1)
    line = next(line for line in result.outlines if "CONTAINER " in line)
    name, kind = line.split("CONTAINER ")[1].split()[:2]
    assert kind == "docker"
    assert not docker_engine.client.containers.list(all=True, filters={"name": f"^/{name}$"})


def test_without_an_engine_a_docker_board_skips_saying_how_to_get_one(pytester, monkeypatch):
    pytester.makepyfile("def test_needs_a_board(board): pass\n")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "--board=docker", timeout=120)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*docker engine unix:///nonexistent/docker.sock: no such socket; install Docker "
                                 "(apt-get install docker.io) and start dockerd*"])
