"""The UDP fault proxy (netfault/udp.py) between CPython UDP clients and a UDP echo server on
loopback: every fault, seeded repeatability, per-client upstream addresses, bad input, clean
shutdown; and the plugin's `gateway` and `udpfault` fixtures."""

import socket
import threading
import time

import pytest

from micropython_hil.errors import NetFaultError
from micropython_hil.netfault import UdpFaultProxy


class Echo:
    """A UDP server on loopback that records each datagram and its source, and echoes it."""

    def __init__(self, echo: bool = True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.host, self.port = self.sock.getsockname()
        self.echo = echo
        self.got: list[tuple[bytes, tuple]] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                data, source = self.sock.recvfrom(65535)
            except OSError:
                return
            if data == b"stop":
                return
            with self.cond:
                self.got.append((data, source))
                self.cond.notify_all()
            if self.echo:
                self.sock.sendto(data, source)

    def wait(self, n, timeout=3.0):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= n, timeout), f"server got {len(self.got)} of {n}"
            return list(self.got)

    def close(self):
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"stop", (self.host, self.port))
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def echo():
    server = Echo()
    yield server
    server.close()


@pytest.fixture
def proxy(echo):
    with UdpFaultProxy(echo.host, echo.port) as p:
        yield p


def client(timeout=0.5):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    return s


def drain(sock, wait=0.15):
    got = []
    sock.settimeout(wait)
    try:
        while True:
            got.append(sock.recv(65535))
    except socket.timeout:
        return got


def test_clean_path_and_one_upstream_address_per_client(echo, proxy):
    a, b = client(), client()
    try:
        a.sendto(b"from a", proxy.address)
        assert a.recv(100) == b"from a"
        b.sendto(b"from b", proxy.address)
        assert b.recv(100) == b"from b"
        sources = {data: source for data, source in echo.wait(2)}
        assert sources[b"from a"] != sources[b"from b"]  # the server tells the clients apart
        assert proxy.stats().clients == 2 and proxy.stats().up == 2 and proxy.stats().down == 2
    finally:
        a.close()
        b.close()


def test_loss_is_seeded_and_repeats(echo):
    counts = []
    for _run in range(2):
        with UdpFaultProxy(echo.host, echo.port, seed=7) as p, client() as c:
            before = len(echo.got)
            p.loss(0.5, direction="up")
            for i in range(100):
                c.sendto(b"%d" % i, p.address)
            drain(c)
            stats = p.stats()
            counts.append((stats.lost, stats.up, [d for d, _ in echo.got[before:]]))
            assert stats.lost + stats.up == 100 and 30 < stats.lost < 70
    assert counts[0] == counts[1]  # the same seed drops the same datagrams


def test_duplicate_reorder_and_delay(echo, proxy):
    with client() as c:
        with proxy.duplicate(1.0, direction="down"):
            c.sendto(b"twice", proxy.address)
            assert drain(c) == [b"twice", b"twice"]
        with proxy.reorder(1.0, direction="up", hold_ms=2000):
            c.sendto(b"first", proxy.address)
            c.sendto(b"second", proxy.address)
            assert [d for d, _ in echo.wait(3)[-2:]] == [b"second", b"first"]
        with proxy.reorder(1.0, direction="up", hold_ms=50):
            c.sendto(b"alone", proxy.address)  # nothing overtakes it: it goes after hold_ms
            assert echo.wait(4)[-1][0] == b"alone"
        drain(c)
        c.settimeout(2)
        with proxy.delay(100, direction="both"):
            started = time.monotonic()
            c.sendto(b"slow", proxy.address)
            assert c.recv(100) == b"slow"
            assert time.monotonic() - started >= 0.19
        stats = proxy.stats()
        assert (stats.duplicated, stats.reordered, stats.delayed) == (1, 1, 2)


def test_silence_is_a_gateway_that_stops_answering(echo, proxy):
    with client() as c:
        fault = proxy.silence(direction="down")
        c.sendto(b"heard", proxy.address)
        echo.wait(1)  # the server hears the client ...
        assert drain(c) == []  # ... the client hears nothing
        fault.clear()
        fault.clear()  # idempotent
        c.sendto(b"back", proxy.address)
        assert c.recv(100) == b"back"
        assert proxy.stats().silenced == 1 and not fault.active


def test_bad_faults_are_refused(proxy):
    with pytest.raises(ValueError, match="rate 1.5"):
        proxy.loss(1.5)
    with pytest.raises(ValueError, match="direction 'sideways'"):
        proxy.loss(0.1, direction="sideways")
    with pytest.raises(ValueError, match="give values >= 0"):
        proxy.delay(0)
    with proxy.loss(0.1, direction="up"):
        with pytest.raises(NetFaultError, match="loss already set on direction 'up'"):
            proxy.loss(0.2)
        proxy.loss(0.2, direction="down")  # the other direction is free
    proxy.clear_faults()
    proxy.loss(0.3).clear()


def test_close_ends_the_thread_and_sockets(echo):
    p = UdpFaultProxy(echo.host, echo.port).start()
    with client() as c:
        c.sendto(b"x", p.address)
        assert c.recv(10) == b"x"
    p.close()
    p.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("netfault-udp")]
    with pytest.raises(NetFaultError, match="is not running"):
        p.loss(0.1)
    with pytest.raises(NetFaultError, match="cannot listen on 127.0.0.1:"):
        with UdpFaultProxy(echo.host, echo.port, listen_port=echo.port):
            pass


def test_the_gateway_and_udpfault_fixtures(pytester):
    pytester.makepyfile("""
        from micropython_hil.mqttsn import SnClient

        def test_through_the_fault_proxy(gateway, udpfault, telemetry):
            with SnClient(udpfault.address, "via-proxy") as c:
                assert c.connect() == 0
                c.publish("fx/data", "hello", qos=1)
            telemetry.expect("fx/data")
            assert gateway.traffic.expect("CONNECT").address != "%s:%d" % udpfault.address
            assert udpfault.stats().up >= 3
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--hil-artifacts", "arts")
    result.assert_outcomes(passed=1)
    saved = list(pytester.path.glob("arts/*/mqttsn.jsonl"))
    assert saved and "via-proxy" in saved[0].read_text()
