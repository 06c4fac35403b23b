"""A simulated board in its own network namespace (netfault/kernel.py): the same REPL, simulator
channel and firmware as a local board, and kernel-level faults on its WiFi link: packet loss in
transit, a rate limit, the link going down under open sockets. Real namespaces, real packets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from micropython_hil.board.unix_port import wait_gone
from micropython_hil.mqtt.outage import Outage
from micropython_hil.netfault.kernel import KernelLink, unavailable

WEATHER = "firmware_under_test/weather_station"
needs_netns = pytest.mark.skipif(bool(unavailable()), reason=f"kernel link: {unavailable()}")


@pytest.fixture
def board(netns_board):
    """Every board-based fixture of this module (sim, start_firmware) uses the namespaced board."""
    return netns_board


@pytest.fixture
def wired(board):
    """The weather station's parts, as a bench would have them wired."""
    board.sim.sensor("bme280", address=0x76).set(temperature=20.0, pressure=1000.0, humidity=50.0)
    board.sim.adc(34).set(1.9)
    return board


def host_link_names() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def test_the_board_runs_in_its_own_namespace_through_the_same_repl(board, kernel_link):
    assert os.readlink(f"/proc/{board.port.pid}/ns/net") != os.readlink("/proc/self/ns/net")
    assert board.eval("1 + 1") == 2
    board.sim.adc(34).set(0.5)  # the simulator's channel reaches the board over the wire
    assert abs(board.eval("__import__('machine').ADC(__import__('machine').Pin(34)).read_uv()") - 500_000) < 20_000


def test_the_board_reaches_host_loopback_over_its_wifi_link(board, kernel_link):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        board.exec(f"import socket\ns = socket.socket()\ns.connect(socket.getaddrinfo('127.0.0.1', {port})[0][-1])")
        conn, (peer, _) = server.accept()
        conn.close()
        board.exec("s.close()")
    assert peer == kernel_link.addresses["board_wlan"]  # not the board's own loopback: the WiFi path


def sink_server():
    """A TCP server on the host's loopback that counts what one client sends."""
    server = socket.create_server(("127.0.0.1", 0))
    got = []

    def drain():
        conn, _ = server.accept()
        with conn:
            total = 0
            while chunk := conn.recv(65536):
                total += len(chunk)
            got.append(total)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    return server, thread, got


SEND = """
import socket, time
s = socket.socket()
s.connect(socket.getaddrinfo('127.0.0.1', {port})[0][-1])
chunk = b'x' * 1000
t0 = time.ticks_ms()
for _ in range({kb}):
    s.write(chunk)
s.close()
"""


def timed_upload(board, kb: int) -> tuple[float, int]:
    server, thread, got = sink_server()
    with server:
        start = time.monotonic()
        board.exec(SEND.format(port=server.getsockname()[1], kb=kb), timeout=30)
        thread.join(30)
        return time.monotonic() - start, got[0]


@pytest.mark.sim(time="real")
def test_a_rate_limit_slows_the_link_and_loss_is_retransmitted(board, kernel_link):
    fast, size = timed_upload(board, 30)
    assert size == 30_000 and fast < 0.6
    with kernel_link.rate(20_000, direction="up"):
        slow, size = timed_upload(board, 30)
    assert size == 30_000 and slow > 0.9, f"30 kB at 20 kB/s took {slow:.2f} s"
    with kernel_link.loss(20) as loss:
        _, size = timed_upload(board, 20)
    assert size == 20_000 and loss.dropped > 0  # TCP retransmitted every segment dropped in transit
    assert not kernel_link.faults


@pytest.mark.firmware(WEATHER)
@pytest.mark.sim(time="fast")
def test_telemetry_through_a_lossy_link_loses_no_qos1_message(wired, kernel_link, start_firmware, telemetry):
    device = start_firmware(extra={"interval_s": 60})
    telemetry.collect(2, device.topic("telemetry"), timeout=30)
    with kernel_link.loss(15) as loss:
        telemetry.collect(12, device.topic("telemetry"), timeout=60, since=telemetry.mark())
        assert loss.dropped > 0, "no packet was dropped: the fault was not on the board's path"
    telemetry.assert_sequence(device.topic("telemetry"), min_count=14)


@pytest.mark.firmware(WEATHER)
@pytest.mark.sim(time="fast")
def test_kernel_loss_composes_with_the_proxys_jitter(wired, kernel_link, netfault, start_firmware, telemetry):
    """10 % loss below TCP on the board's link, 200 ms of jitter from the fault proxy above it."""
    device = start_firmware(via=netfault, extra={"interval_s": 60})
    telemetry.collect(1, device.topic("telemetry"), timeout=30)
    with kernel_link.loss(10), netfault.latency(200, jitter_ms=200):
        telemetry.collect(6, device.topic("telemetry"), timeout=60, since=telemetry.mark())
    telemetry.assert_sequence(device.topic("telemetry"), min_count=7)


@pytest.mark.firmware(WEATHER)
@pytest.mark.sim(time="real")
def test_link_down_under_an_open_connection_fires_the_last_will_then_the_device_reconnects(
        wired, kernel_link, start_firmware, telemetry):
    device = start_firmware(keepalive=2, extra={"interval_s": 1})
    telemetry.collect(1, device.topic("telemetry"), timeout=20)
    with Outage(telemetry, device) as outage:
        with kernel_link.down():
            outage.assert_last_will(timeout=10)
    outage.assert_back_online(within=30)
    outage.assert_no_loss("telemetry", min_after=2)


@needs_netns
def test_faults_are_one_at_a_time_where_they_would_clash_and_errors_name_the_link():
    with KernelLink(name="clash") as link:
        with link.down():
            with pytest.raises(Exception, match="clash: a down fault .* already in force"):
                link.down()
        with link.rate(10_000, direction="up"):
            with pytest.raises(Exception, match="clash: a rate fault"):
                link.rate(5_000)
            with link.rate(10_000, direction="down"):
                pass
        with pytest.raises(ValueError, match="direction"):
            link.loss(5, direction="sideways")
        with pytest.raises(Exception, match="clash: loss of 120% is not a percentage"):
            link.loss(120)


@needs_netns
def test_nothing_is_left_in_the_host_network_after_close_or_a_sigkill():
    link = KernelLink().start()
    names = link.host_interfaces
    assert all(name in host_link_names() for name in names)
    link.close()
    assert wait_until(lambda: not any(name in host_link_names() for name in names))

    # A process in the namespace, started as boards are (a Tether, through the link's launcher).
    code = ("import time; from micropython_hil.netfault.kernel import KernelLink; "
            "from micropython_hil.tether import Tether; link = KernelLink().start(); "
            "inside = Tether().popen([link.launcher('/bin/sleep'), '60']); "
            "print(inside.pid, *link.host_interfaces, flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid, *names = child.stdout.readline().split()
        assert len(names) == 2 and all(name in host_link_names() for name in names)
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    finally:
        child.kill()  # SIGKILL: no teardown runs
        child.wait()
        child.stdout.close()
    assert wait_gone(int(pid)), "the process in the namespace outlived its SIGKILLed harness"
    assert wait_until(lambda: not any(name in host_link_names() for name in names)), \
        f"{names} outlived a SIGKILLed owner"


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)  # the kernel frees a namespace in deferred work: nothing to wait on
    return False
