"""FaultProxy between a real MicroPython MQTT client (the unix port running micropython-lib's
umqtt.simple, installed from the package cache) and real brokers (embedded amqtt; mosquitto
when installed): cut and reconnect with resubscription, blackhole caught by keepalive with the
last will firing, refused connections, measurable latency, a corrupted topic, a schedule."""
from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import threading
import time

import pytest

from micropython_hil.deploy import packages
from micropython_hil.mqtt.broker import AmqttBroker, MosquittoBroker
from micropython_hil.plugin.netfault import netfault  # noqa: F401  (the fixture under test)

KEEPALIVE_S = 1  # short, so keepalive-driven failures show within a couple of seconds

# Runs ON the unix port. Reconnects forever; prints one line per event for the test to follow.
DEVICE = """
import sys, time, select, usocket
from umqtt import simple

class _Net:
    # umqtt.simple makes blocking sockets; give them a timeout so a CONNECT into a
    # blackhole fails instead of hanging (as firmware on a real board should).
    getaddrinfo = staticmethod(usocket.getaddrinfo)
    @staticmethod
    def socket():
        s = usocket.socket()
        s.settimeout(2)
        return s
simple.socket = _Net

host, port, cid, ka = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
base = "dev/" + cid
c = None
def on_msg(topic, msg):
    print("MSG", topic.decode(), msg.decode())
    c.publish((base + "/ack").encode(), msg)

n = 0
while True:
    try:
        c = simple.MQTTClient(cid, host, port, keepalive=ka)
        c.set_callback(on_msg)
        c.set_last_will((base + "/status").encode(), b"offline", retain=True)
        c.connect()
        c.sock.setsockopt(6, 1, 1)  # TCP_NODELAY: umqtt writes each packet in pieces
        c.subscribe((base + "/cmd").encode())
        c.publish((base + "/status").encode(), b"online", retain=True)
        n += 1
        print("CONNECTED", n)
        poller = select.poll()
        poller.register(c.sock, select.POLLIN)
        last_rx = last_ping = time.ticks_ms()
        while True:
            if poller.poll(20):
                c.wait_msg()
                last_rx = time.ticks_ms()
            now = time.ticks_ms()
            if time.ticks_diff(now, last_ping) > ka * 500:
                c.ping()
                last_ping = now
            if time.ticks_diff(now, last_rx) > ka * 1500:
                raise OSError("no answer for 1.5x keepalive")
    except Exception as e:
        print("LOST", repr(e))
        try:
            c.sock.close()
        except Exception:
            pass
        time.sleep(0.1)
"""


class Device:
    """The MicroPython client as a subprocess; its event lines are read by a thread."""

    def __init__(self, script, lib, host: str, port: int, client_id: str) -> None:
        env = dict(os.environ, MICROPYPATH=f".frozen:{lib}")
        self.proc = subprocess.Popen([shutil.which("micropython"), str(script), host, str(port), client_id,
                                      str(KEEPALIVE_S)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip())

    def expect(self, pattern: str, timeout: float = 5.0) -> re.Match:
        """Wait for an output line matching `pattern` (earlier lines are consumed)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"device printed no line matching {pattern!r} within {timeout} s; "
                                     f"output so far: {self.log[-10:]}") from None
            self.log.append(line)
            if m := re.search(pattern, line):
                return m

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()
        self.reader.join(2)


@pytest.fixture(params=["amqtt", "mosquitto"])
def broker(request):
    if request.param == "mosquitto":
        reason = MosquittoBroker.available()
        if reason:
            pytest.skip(reason)
        b = MosquittoBroker()
    else:
        b = AmqttBroker()
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def umqtt_lib():
    try:
        return packages.ensure(["umqtt.simple"])
    except packages.PackageError as e:
        pytest.skip(f"umqtt.simple not in the package cache and not fetchable: {e}")


class Capture:
    """Messages the broker routes, as (time, topic, payload)."""

    def __init__(self, broker) -> None:
        self.broker, self.items = broker, []
        broker.add_listener(self)

    def __call__(self, topic, payload, qos, retain, dup, client_id) -> None:
        self.items.append((time.monotonic(), topic, bytes(payload)))

    def wait(self, topic: str, payload: bytes, since: float = 0.0, timeout: float = 5.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, tp, pl in list(self.items):
                if t >= since and tp == topic and pl == payload:
                    return t
            time.sleep(0.002)
        raise AssertionError(f"broker routed no {topic} {payload!r} within {timeout} s; saw {self.items[-8:]}")


@pytest.fixture
def capture(broker):
    cap = Capture(broker)
    yield cap
    broker.remove_listener(cap)


@pytest.fixture
def device(netfault, capture, umqtt_lib, tmp_path, request):
    script = tmp_path / "device.py"
    script.write_text(DEVICE)
    cid = "nf" + re.sub(r"\W", "", request.node.name)[-16:]
    dev = Device(script, umqtt_lib, netfault.host, netfault.port, cid)
    dev.cid = cid
    dev.expect("CONNECTED 1")
    yield dev
    pid = dev.proc.pid
    dev.close()
    assert not os.path.exists(f"/proc/{pid}/status") or "zombie" in open(f"/proc/{pid}/status").read()


def command_round_trip(broker, capture, cid: str, payload: bytes, timeout: float = 5.0) -> float:
    """Host publishes a command; the device answers on its ack topic. Seconds until the ack."""
    with broker.client() as host:
        start = time.monotonic()
        host.publish(f"dev/{cid}/cmd", payload)
        return capture.wait(f"dev/{cid}/ack", payload, since=start, timeout=timeout) - start


def test_cut_then_client_reconnects_and_resubscribes(broker, netfault, device, capture):
    command_round_trip(broker, capture, device.cid, b"before")
    netfault.cut()
    device.expect("LOST")
    device.expect("CONNECTED 2")
    command_round_trip(broker, capture, device.cid, b"after")  # the new session has its subscription
    st = netfault.stats()
    assert (st.connections_seen, st.current_connections, st.cut) == (2, 1, 1)


# How late after 1.5x keepalive a broker drops a silent client: mosquitto 2.0 sweeps keepalives
# only every few seconds (measured: keepalive 1 s -> dropped after 5.6 s; 2 s -> 6.0 s).
WILL_SLACK_S = {"amqtt": 1.0, "mosquitto": 5.5}


def test_blackhole_keepalive_catches_it_and_last_will_fires(broker, netfault, device, capture):
    capture.wait(f"dev/{device.cid}/status", b"online")
    slack = WILL_SLACK_S[broker.kind]
    with netfault.blackhole():
        start = time.monotonic()
        # the broker hears nothing for 1.5x keepalive and publishes the will
        fired = capture.wait(f"dev/{device.cid}/status", b"offline", since=start,
                             timeout=1.5 * KEEPALIVE_S + slack + 1) - start
        device.expect("LOST.*keepalive", timeout=5)  # the client notices too and reconnects...
        assert netfault.stats().current_connections == 1  # ...the old connection is still open
    device.expect("CONNECTED [2-9]", timeout=6)  # ...once the network is back
    assert 1.5 * KEEPALIVE_S - 0.1 <= fired <= 1.5 * KEEPALIVE_S + slack
    capture.wait(f"dev/{device.cid}/status", b"online", since=start + fired)
    command_round_trip(broker, capture, device.cid, b"back")


def test_refused_connections_until_the_broker_port_opens(broker, netfault, device, capture):
    with netfault.refuse():
        netfault.cut()
        device.expect("LOST")
        device.expect(r"LOST.*(111|ECONNREFUSED)")  # a reconnect attempt refused
        assert netfault.stats().connections_seen == 1
    device.expect("CONNECTED 2")
    command_round_trip(broker, capture, device.cid, b"reopened")


def test_latency_added_measurably(broker, netfault, device, capture):
    def median(n: int = 5) -> float:
        return sorted(command_round_trip(broker, capture, device.cid, b"t%d" % i) for i in range(n))[n // 2]
    clean = median()
    with netfault.latency(60, direction="down"):
        slowed = median()
    assert slowed - clean >= 0.055  # the command travels the delayed direction once
    assert slowed - clean < 0.3


def test_corrupted_topic_is_routed_elsewhere(broker, netfault, device, capture):
    with netfault.corrupt("up", match=f"dev/{device.cid}/ack".encode(), length=3, xor=0x20) as fault:
        with broker.client() as host:
            start = time.monotonic()
            host.publish(f"dev/{device.cid}/cmd", b"flipped")
            capture.wait(f"DEV/{device.cid}/ack", b"flipped", since=start)  # 'dev' -> 'DEV'
    assert fault.hits == 1


def test_schedule_outage_then_recovery(broker, netfault, device, capture):
    sched = netfault.schedule([(0.0, "cut", 0.6), (0.8, "latency", 0.5, {"ms": 30})])
    device.expect("LOST")
    sched.wait(3)
    assert [e for _, e in sched.events] == ["start cut", "end cut", "start latency", "end latency"]
    device.expect("CONNECTED [2-9]", timeout=5)
    assert netfault.stats().cut >= 2  # the first connection, and attempts during the outage
    command_round_trip(broker, capture, device.cid, b"scheduled")
