"""The simulated WiFi link gates the firmware's sockets as an ESP32's lwIP does: a drop loses the
open connections (ECONNABORTED, then ENOTCONN), refuses connects (EHOSTUNREACH) and DNS (-202),
and the real connection goes quiet, so the broker fires the last will after 1.5 x keepalive."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from micropython_hil.plugin.sim import sim_process  # noqa: F401  (fixture)
from micropython_hil.sim.simulator import Simulator
from micropython_hil.errors import SimulatorError


class Peer:
    """A TCP server on the host standing in for the firmware's broker: what each connection
    received, and whether the board's end closed it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[dict] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            record = {"sock": conn, "data": b"", "closed": False}
            with self.lock:
                self.conns.append(record)
            threading.Thread(target=self._read, args=(record,), daemon=True).start()

    def _read(self, record: dict) -> None:
        while True:
            try:
                data = record["sock"].recv(4096)
            except OSError:
                data = b""
            with self.lock:
                if not data:
                    record["closed"] = True
                    return
                record["data"] += data

    def close(self) -> None:
        self.listener.close()
        for c in self.conns:
            c["sock"].close()


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.close()


def wait_until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "the board did not get there"
        time.sleep(0.005)


def results(run) -> dict:
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


# Waits only for the link and for a pin the test drives, never for time: the same code runs
# in every time mode, stepped included (where the clock moves only when the test advances it).
SOCKETS_ACROSS_A_DROP = """
import json, machine, select, socket
r = {}
def err(f, *a):
    try:
        f(*a)
        return "ok"
    except OSError as e:
        return [e.args[0], str(e)]
addr = socket.getaddrinfo("127.0.0.1", %(port)d)[0][-1]
s = socket.socket()
s.connect(addr)
s.write(b"hello")
p = select.poll()
p.register(s, select.POLLIN)
machine.Pin(2, machine.Pin.OUT).on()          # the test drops the link now
ev = p.poll(-1)                                # woken by the drop: nothing else comes
r["woken"] = [(o is s, e & (select.POLLERR | select.POLLHUP) != 0) for o, e in ev]
r["recv"] = err(s.recv, 10)                    # the peer's "late" is there: not delivered
r["write"] = err(s.write, b"lost")
r["send"] = err(s.send, b"lost")
r["still_ready"] = len(p.poll(0))
p.unregister(s)
s.close()                                      # quietly: the peer must not see it
r["after_close"] = err(s.write, b"x")
c = socket.socket()
r["connect"] = err(c.connect, addr)
c.close()
r["dns_name"] = err(socket.getaddrinfo, "broker.example.com", 1883)
r["dns_numeric"] = err(socket.getaddrinfo, "127.0.0.1", 1883)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r["udp"] = err(u.sendto, b"x", addr)
u.close()
machine.Pin(2, machine.Pin.OUT).off()          # the test restores the link now
go = machine.Pin(4, machine.Pin.IN)
while not go.value():
    pass
s2 = socket.socket()
s2.connect(addr)
s2.write(b"again")
r["after_restore"] = "ok"
print(json.dumps(r))
"""


@pytest.mark.parametrize("mode", ["real", "fast", "stepped"])
def test_a_drop_fails_open_sockets_connects_and_dns_as_lwip_does(sim_process, peer, mode):
    with Simulator(time_mode=mode, wifi_connect_s=0) as sim:
        p = sim_process.start(sim, SOCKETS_ACROSS_A_DROP % {"port": peer.port})
        wait_until(lambda: sim.pin(2).level == 1)
        wait_until(lambda: peer.conns and peer.conns[0]["data"] == b"hello")
        sim.wifi.drop(refuse_for=None)
        peer.conns[0]["sock"].sendall(b"late")
        wait_until(lambda: sim.pin(2).level == 0)
        old = peer.conns[0]
        # Closed by the firmware, yet the real connection is still open and silent: the chip's
        # lwIP aborted it without a word on the air.
        time.sleep(0.2)
        assert old["data"] == b"hello" and not old["closed"] and len(peer.conns) == 1
        sim.wifi.restore()
        sim.pin(4).set(1)
        r = results(sim_process.finish(p))
    assert r["woken"] == [[True, True]]
    assert r["recv"] == [113, "[Errno 113] ECONNABORTED"]
    assert r["write"] == r["send"] == [128, "[Errno 128] ENOTCONN"]
    assert r["still_ready"] == 1
    assert r["after_close"] == [9, "[Errno 9] EBADF"]
    assert r["connect"] == [118, "[Errno 118] EHOSTUNREACH"]
    assert r["dns_name"] == [-202, "-202"] and r["dns_numeric"] == "ok"
    assert r["udp"] == [118, "[Errno 118] EHOSTUNREACH"]
    assert r["after_restore"] == "ok"
    wait_until(lambda: len(peer.conns) == 2 and peer.conns[1]["data"] == b"again")
    assert old["data"] == b"hello"


@pytest.mark.parametrize("mode", ["real", "fast"])
def test_asyncio_waiting_on_a_connection_wakes_to_data_and_to_the_drop(sim_process, peer, mode):
    with Simulator(time_mode=mode) as sim:
        p = sim_process.start(sim, """
import asyncio, json, machine, socket
r = {}
async def main():
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", %d)[0][-1])
    s.setblocking(False)
    stream = asyncio.StreamReader(s)
    r["data"] = (await stream.read(5)).decode()    # the peer sends it: select sees the socket
    machine.Pin(2, machine.Pin.OUT).on()           # the test drops the link now
    try:
        r["then"] = await stream.read(5)           # nothing comes: woken by the drop alone
    except OSError as e:
        r["then"] = e.errno
asyncio.run(main())
print(json.dumps(r))
""" % peer.port)
        wait_until(lambda: peer.conns)
        time.sleep(0.1)
        peer.conns[0]["sock"].sendall(b"hello")
        wait_until(lambda: sim.pin(2).level == 1)
        sim.wifi.drop(refuse_for=None)
        r = results(sim_process.finish(p, timeout=10))
    assert r == {"data": "hello", "then": 113}


def test_a_send_after_the_drop_raises_econnaborted(sim_process, peer):
    with Simulator(time_mode="fast") as sim:
        p = sim_process.start(sim, """
import machine, socket, time
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", %d)[0][-1])
s.send(b"up")
machine.Pin(2, machine.Pin.OUT).on()
while True:
    time.sleep(0.5)
    try:
        s.send(b"reading")
    except OSError as e:
        print("send failed:", e.errno, e)
        break
""" % peer.port)
        wait_until(lambda: sim.pin(2).level == 1)
        sim.wifi.drop(refuse_for=30)
        out = sim_process.finish(p).stdout
    assert "send failed: 113 [Errno 113] ECONNABORTED" in out, out


def test_setblocking_true_drops_a_timeout_set_before_as_on_the_chip(sim_process, peer):
    """The esp32 port's setblocking(True) is settimeout(None): a read then waits for ever. The
    unix port keeps the earlier timeout (measured: ETIMEDOUT after 1 s), which hid a firmware
    that never set its timeout again after umqtt's check_msg (it ends with setblocking(True))."""
    with Simulator(time_mode="real") as sim:
        p = sim_process.start(sim, """
import socket, time
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", %d)[0][-1])
s.settimeout(0.5)
try:
    s.read(1)
except OSError as e:
    print("timed out:", e.errno)
s.setblocking(False)
s.setblocking(True)
t = time.ticks_ms()
print("read", s.read(1), "after a wait of at least 1 s:", time.ticks_diff(time.ticks_ms(), t) >= 1000)
""" % peer.port)
        wait_until(lambda: peer.conns)
        time.sleep(3)  # past the 0.5 s timeout six times: only a read that waits for ever is still there
        peer.conns[0]["sock"].sendall(b"x")
        out = sim_process.finish(p).stdout
    assert "timed out: 110" in out and "read b'x' after a wait of at least 1 s: True" in out, out


def test_tls_over_a_lost_connection_fails_through_the_hook_ssl_wraps(sim_process, peer):
    """The port's TLS wraps socket.tls_stream(sock) (what ssl.py hands it), whose I/O goes
    through the shim socket: the link's loss reaches the TLS socket's poll and its writes."""
    with Simulator(time_mode="fast") as sim:
        p = sim_process.start(sim, """
import json, machine, select, socket
try:
    import tls
except ImportError:
    print(json.dumps("no tls"))
    raise SystemExit
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", %d)[0][-1])
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = tls.CERT_NONE
w = ctx.wrap_socket(socket.tls_stream(s), server_hostname="peer", do_handshake_on_connect=False)
p = select.poll()
p.register(w, select.POLLIN)
r = {"before": p.poll(0)}
machine.Pin(2, machine.Pin.OUT).on()
go = machine.Pin(4, machine.Pin.IN)
while not go.value():
    pass
r["after"] = [e for o, e in p.poll(0)]
try:
    w.write(b"reading")              # the handshake's first flight: over a lost connection
except OSError as e:
    r["write"] = e.errno
w.close()
print(json.dumps(r))
""" % peer.port)
        wait_until(lambda: sim.pin(2).level == 1)
        sim.wifi.drop(refuse_for=None)
        sim.pin(4).set(1)
        r = results(sim_process.finish(p))
    if r == "no tls":
        pytest.skip("this unix port has no TLS")
    assert r == {"before": [], "after": [1 | 8 | 16], "write": 113}
    assert peer.conns[0]["data"] == b""  # not a byte of the handshake went out


def test_the_access_point_leaving_or_disconnect_loses_the_stations_connections(sim_process, peer):
    with Simulator(time_mode="fast") as sim:
        sim.wifi.configure(networks={"lab": "pw"}, connect_s=1.0)
        p = sim_process.start(sim, """
import json, machine, network, socket, time
r = {}
w = network.WLAN(network.STA_IF)
w.active(True)
addr = socket.getaddrinfo("127.0.0.1", %d)[0][-1]
w.connect("lab", "pw")
s = socket.socket()
try:
    s.connect(addr)                 # no IP yet
except OSError as e:
    r["early"] = e.errno
s.close()
while not w.isconnected():
    time.sleep_ms(100)
s = socket.socket()
s.connect(addr)
machine.Pin(2, machine.Pin.OUT).on()        # the test takes the access point away
while w.isconnected():
    time.sleep_ms(10)
r["status"] = w.status()
try:
    s.write(b"x")
except OSError as e:
    r["gone"] = e.errno
s.close()
machine.Pin(2, machine.Pin.OUT).off()       # the test brings it back
while not w.isconnected():
    time.sleep_ms(10)
s = socket.socket()
s.connect(addr)
s.write(b"back")
w.disconnect()
try:
    s.write(b"x")
except OSError as e:
    r["disconnect"] = e.errno
print(json.dumps(r))
""" % peer.port)
        wait_until(lambda: sim.pin(2).level == 1)
        sim.wifi.configure(networks={"cafe": None})
        wait_until(lambda: sim.pin(2).level == 0)
        sim.wifi.configure(networks={"lab": "pw"})
        r = results(sim_process.finish(p))
    assert r == {"early": 118, "status": 201, "gone": 113, "disconnect": 113}
    wait_until(lambda: any(c["data"] == b"back" for c in peer.conns))


def test_an_outage_outlasts_a_reset_until_restored(sim_process, peer):
    code = """
import machine, socket
addr = socket.getaddrinfo("127.0.0.1", %d)[0][-1]
s = socket.socket()
try:
    s.connect(addr)
    print("connected")
except OSError as e:
    print("connect failed", e.errno)
if machine.reset_cause() == machine.PWRON_RESET:
    machine.Pin(2, machine.Pin.OUT).on()
    go = machine.Pin(4, machine.Pin.IN)
    while not go.value():
        pass
    machine.reset()
""" % peer.port
    with Simulator(time_mode="fast", wifi_connect_s=0) as sim:
        p = sim_process.start(sim, code)
        wait_until(lambda: sim.pin(2).level == 1)
        sim.wifi.drop(refuse_for=None)
        sim.pin(4).set(1)
        first = sim_process.finish(p)
        assert first.stdout.splitlines()[-1:] == ["connected"] and sim.on_board_exit(first.returncode)
        second = sim_process.run(sim, code)
        assert second.stdout.splitlines()[-1:] == ["connect failed 118"], second.stdout + second.stderr
        sim.wifi.restore()   # no board running: the next launch finds the access point back
        third = sim_process.run(sim, code)
        assert third.stdout.splitlines()[-1:] == ["connected"], third.stdout + third.stderr


def test_drop_needs_a_board_and_a_sane_refusal():
    with Simulator() as sim:
        with pytest.raises(SimulatorError, match="no board is running"):
            sim.wifi.drop()
        with pytest.raises(SimulatorError, match="refuse_for must be >= 0"):
            sim.wifi.drop(refuse_for=-1)
        sim.wifi.restore()  # nothing dropped, no board: nothing to do


# A team's firmware, written the usual way: its own config file, umqtt.simple, a last will, a
# reading every half second, and on any OSError close, wait a second and connect again,
# logging each new kind of failure. It never asks the WLAN whether it is connected. QoS 1 keeps
# it in step with the broker in fast time, where its sleeps take no wall time: at QoS 0 it
# would fill the socket buffers faster than amqtt routes, and the broker, still reading that
# backlog, would hear no silence for seconds after the drop.
NODE_MAIN = """\
import json
import time

from umqtt.simple import MQTTClient

with open("node.json") as f:
    cfg = json.load(f)
status = "nodes/%s/status" % cfg["id"]
count = 0
logged = None
while True:
    client = None
    try:
        client = MQTTClient(cfg["id"], cfg["host"], port=cfg["port"], user=cfg["user"],
                            password=cfg["pass"], keepalive=2)
        client.set_last_will(status, b"offline", retain=True)
        client.connect()
        client.publish(status, b"online", retain=True)
        logged = None
        while True:
            count += 1
            client.publish("nodes/%s/count" % cfg["id"], str(count), qos=1)
            time.sleep(0.5)
    except OSError as e:
        if str(e) != logged:
            print("link lost:", e)
            logged = str(e)
        if client is not None and client.sock is not None:
            client.sock.close()
        time.sleep(1)
"""
NODE_JSON = {"host": "{host}", "port": "{port}", "id": "{client_id}", "user": "{user}", "pass": "{password}"}


@pytest.fixture
def node(tmp_path):
    folder = tmp_path / "node"
    folder.mkdir()
    (folder / "main.py").write_text(NODE_MAIN)
    (folder / "manifest.json").write_text(json.dumps({"packages": ["umqtt.simple"]}))
    return folder


def outage_is_seen_by_the_broker(sim, start_firmware, telemetry, node, drop):
    device = start_firmware(firmware=node, files={"node.json": NODE_JSON})
    status = f"nodes/{device.client_id}/status"
    count = f"nodes/{device.client_id}/count"
    telemetry.expect(status, where=lambda m: m.payload == b"online", timeout=15)
    telemetry.collect(3, count, timeout=15)
    dropped = time.monotonic()
    drop()
    will = telemetry.expect_last_will(status, b"offline", timeout=10, since=telemetry.mark() - 1)
    quiet = time.monotonic() - dropped
    # The broker heard nothing for 1.5 x keepalive (3 s, less the half second since the last
    # reading): the real connection went quiet, it was not closed (that fires the will at once).
    assert 2.3 <= quiet <= 6.0, f"will after {quiet:.1f} s"
    mark = telemetry.mark()
    telemetry.expect_none(count, within=1.0, since=mark)
    sim.wifi.restore()
    back = telemetry.expect(status, where=lambda m: m.payload == b"online", timeout=15, since=will)
    telemetry.collect(3, count, timeout=15, since=back)
    # Nothing reached the broker between the will and the new "online", and the readings go on
    # where they stopped, in order.
    assert not [m for m in telemetry.select(count) if will.index < m.index < back.index]
    values = [int(m.payload) for m in telemetry.select(count)]
    assert values == sorted(set(values)), values
    console = device.console.text
    assert "link lost: [Errno 113] ECONNABORTED" in console, console
    assert "link lost: [Errno 118] EHOSTUNREACH" in console, console


@pytest.mark.sim(time="real")
def test_an_outage_fires_the_last_will_and_the_firmware_comes_back(sim, start_firmware, telemetry, node):
    outage_is_seen_by_the_broker(sim, start_firmware, telemetry, node, lambda: sim.wifi.drop(refuse_for=None))


@pytest.mark.sim(time="fast")
def test_an_outage_fires_the_last_will_and_the_firmware_comes_back_in_fast_time(sim, start_firmware,
                                                                                 telemetry, node):
    # Board seconds fly in fast time: the outage lasts until the test restores the link.
    outage_is_seen_by_the_broker(sim, start_firmware, telemetry, node, lambda: sim.wifi.drop(refuse_for=None))
