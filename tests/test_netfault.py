"""FaultProxy with plain CPython TCP clients and servers on loopback: every fault, bad input,
stats and clean shutdown."""
from __future__ import annotations

import http.server
import os
import socket
import threading
import time
import urllib.request

import pytest

from micropython_hil.plugin.netfault import netfault  # noqa: F401  (the fixture under test)
from micropython_hil.errors import NetFaultError
from micropython_hil.netfault import FaultProxy


class Server:
    """Threaded TCP server on loopback: echoes (or only records) and notes how peers closed."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.sock.getsockname()
        self.received: list[bytearray] = []  # one per accepted connection
        self.endings: list[str] = []  # "eof" or "reset", one per finished connection
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self.accepted = threading.Event()
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = bytearray()
            self.received.append(buf)
            self.conns.append(conn)
            self.accepted.set()
            t = threading.Thread(target=self._serve, args=(conn, buf), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn: socket.socket, buf: bytearray) -> None:
        ending = "eof"
        try:
            while data := conn.recv(65536):
                buf += data
                if self.echo:
                    conn.sendall(data)
        except ConnectionResetError:
            ending = "reset"
        except OSError:
            ending = "closed"
        self.endings.append(ending)
        try:
            conn.shutdown(socket.SHUT_WR)  # half close answered; then the thread ends
        except OSError:
            pass

    def data(self, i: int = 0) -> bytes:
        """What connection i sent so far (b"" before it was accepted)."""
        return bytes(self.received[i]) if len(self.received) > i else b""

    def close(self) -> None:
        for s in [self.sock, *self.conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept() or recv()
            except OSError:
                pass
            s.close()
        for t in self.threads:
            t.join(2)


def wait_for(pred, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def recv_exactly(sock: socket.socket, n: int, timeout: float = 3.0) -> bytes:
    sock.settimeout(timeout)
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def sink():
    s = Server(echo=False)
    yield s
    s.close()


@pytest.fixture
def proxy(server):
    with FaultProxy(server.host, server.port) as p:
        yield p


def connect(p: FaultProxy) -> socket.socket:
    c = socket.create_connection(p.address, timeout=3)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def rtt(c: socket.socket, n: int = 5) -> float:
    """Median round trip of a one-byte echo, in seconds."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        c.sendall(b"p")
        assert recv_exactly(c, 1) == b"p"
        times.append(time.perf_counter() - t)
    return sorted(times)[n // 2]


# -- clean path -------------------------------------------------------------------------------
def test_forwards_large_payload_intact_and_counts_bytes(proxy, server):
    payload = os.urandom(1 << 20)
    with connect(proxy) as c:
        threading.Thread(target=c.sendall, args=(payload,), daemon=True).start()
        assert recv_exactly(c, len(payload), timeout=10) == payload
        st = proxy.stats()
        assert (st.connections_seen, st.current_connections) == (1, 1)
        assert st.bytes_up == st.bytes_down == len(payload)
    assert wait_for(lambda: proxy.stats().current_connections == 0)
    assert proxy.stats().bytes_up == len(payload)  # kept after the connection closed


def test_both_legs_have_tcp_nodelay(proxy, server):
    with connect(proxy) as c:
        c.sendall(b"x")
        recv_exactly(c, 1)
        link = proxy.links()[0]
        for sock in (link.client_sock, link.upstream_sock):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_half_close_passes_through(sink):
    with FaultProxy(sink.host, sink.port) as p, connect(p) as c:
        c.sendall(b"last words")
        c.shutdown(socket.SHUT_WR)
        assert wait_for(lambda: sink.endings == ["eof"])
        assert bytes(sink.received[0]) == b"last words"
        assert c.recv(10) == b""  # the server's FIN came back through the proxy


def test_upstream_down_resets_the_client():
    dead = socket.create_server(("127.0.0.1", 0))
    host, port = dead.getsockname()
    dead.close()
    with FaultProxy(host, port) as p:
        with pytest.raises(ConnectionResetError):  # at connect or at the first read
            with connect(p) as c:
                c.sendall(b"x")
                c.recv(1)
        assert any("unreachable" in text for _, text in p.events)


def test_http_endpoint_through_proxy_with_latency():
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"ok " + self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        with FaultProxy(*httpd.server_address) as p:
            url = f"http://{p.host}:{p.port}/telemetry"
            assert urllib.request.urlopen(url, timeout=3).read() == b"ok /telemetry"
            with p.latency(100, direction="down"):
                start = time.perf_counter()
                assert urllib.request.urlopen(url, timeout=3).read() == b"ok /telemetry"
                assert time.perf_counter() - start >= 0.1
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(2)


# -- latency, jitter, bandwidth --------------------------------------------------------------
def test_latency_adds_to_each_direction(proxy):
    with connect(proxy) as c:
        base = rtt(c)
        with proxy.latency(30):
            both = rtt(c, 3)
        with proxy.latency(30, direction="up"):
            up = rtt(c, 3)
        after = rtt(c)
        assert all(pipe.fast for pipe in proxy.links()[0].pipes)  # cleared: back to the clean path
    assert both >= 0.060 and both < 0.060 + 0.05
    assert 0.030 <= up < 0.055
    assert after < base + 0.01


def test_jitter_varies_delay_but_keeps_order(proxy):
    with connect(proxy) as c:
        with proxy.latency(10, jitter_ms=8, direction="up"):
            times = [rtt(c, 1) for _ in range(12)]
            msg = b"".join(b"%03d" % i for i in range(200))
            for i in range(200):  # separate writes, each with its own random delay
                c.sendall(b"%03d" % i)
            assert recv_exactly(c, len(msg)) == msg
    assert min(times) >= 0.002 and max(times) - min(times) > 0.004


def test_bandwidth_limits_rate(proxy):
    data = os.urandom(30_000)
    with connect(proxy) as c, proxy.bandwidth(100_000, direction="up"):
        start = time.perf_counter()
        c.sendall(data)
        assert recv_exactly(c, len(data)) == data
        took = time.perf_counter() - start
    assert 0.27 <= took < 0.6


def test_bandwidth_backpressure_slows_the_sender(proxy):
    # 200 B/s: a few MB cannot all be absorbed; sendall must block (proxy buffers are bounded).
    with connect(proxy) as c, proxy.bandwidth(200, direction="up"):
        c.settimeout(0.5)
        sent = 0
        with pytest.raises(socket.timeout):
            while sent < 64 << 20:
                sent += c.send(bytes(65536))
        assert sent < 32 << 20


# -- cut ---------------------------------------------------------------------------------------
def test_cut_rst_resets_both_sides(proxy, server):
    with connect(proxy) as c:
        c.sendall(b"x")
        recv_exactly(c, 1)
        proxy.cut()
        with pytest.raises(ConnectionResetError):
            c.recv(1)
    assert wait_for(lambda: server.endings == ["reset"])
    st = proxy.stats()
    assert (st.cut, st.current_connections) == (1, 0)


def test_cut_fin_closes_cleanly(proxy, server):
    with connect(proxy) as c:
        c.sendall(b"x")
        recv_exactly(c, 1)
        proxy.cut(mode="fin")
        assert c.recv(1) == b""
    assert wait_for(lambda: server.endings == ["eof"])


def test_cut_as_context_keeps_the_link_down_then_recovers(proxy):
    c = connect(proxy)
    c.sendall(b"x")
    recv_exactly(c, 1)
    with proxy.cut() as fault:
        assert fault.active
        with pytest.raises(ConnectionResetError):  # accepted, then reset at once
            with connect(proxy) as again:
                again.sendall(b"y")
                again.recv(1)
    c.close()
    assert not fault.active
    with connect(proxy) as after:
        assert rtt(after) < 0.05
    assert proxy.stats().cut == 2


def test_cut_without_connections_is_a_clear_error(proxy):
    with pytest.raises(NetFaultError, match="no open connection.*wait_connections"):
        proxy.cut()


# -- blackhole ---------------------------------------------------------------------------------
def test_blackhole_keeps_connection_open_and_passes_nothing(proxy, server):
    with connect(proxy) as c:
        c.sendall(b"a")
        recv_exactly(c, 1)
        with proxy.blackhole():
            c.sendall(b"held")
            c.settimeout(0.3)
            with pytest.raises(socket.timeout):
                c.recv(10)  # no answer, and no FIN or RST either
            assert bytes(server.received[0]) == b"a"
            assert proxy.stats().current_connections == 1
        assert recv_exactly(c, 4) == b"held"  # the network came back: TCP delivers late


def test_blackhole_defers_new_connections(proxy, server):
    with proxy.blackhole():
        c = connect(proxy)  # the kernel accepts; nothing reaches the server
        c.sendall(b"hi")
        assert not server.accepted.wait(0.2)
    assert recv_exactly(c, 2) == b"hi"
    c.close()


def test_connection_abandoned_during_blackhole_is_never_forwarded(sink):
    with FaultProxy(sink.host, sink.port) as p:
        with p.blackhole():
            c = connect(p)
            c.sendall(b"CONNECT")  # then the client times out and gives up
            c.close()
            time.sleep(0.1)
        assert wait_for(lambda: any("not forwarded" in text for _, text in p.events))
        assert not sink.accepted.wait(0.1)  # no stale session replayed upstream
        assert p.stats().current_connections == 0


def test_blackhole_one_direction(proxy, server):
    with connect(proxy) as c:
        proxy.wait_connections(current=1)  # forwarded before the blackhole, not deferred by it
        with proxy.blackhole(direction="down"):
            c.sendall(b"ping")
            assert wait_for(lambda: server.data() == b"ping")
            c.settimeout(0.2)
            with pytest.raises(socket.timeout):
                c.recv(4)


def test_client_close_during_blackhole_is_not_seen_upstream(sink):
    with FaultProxy(sink.host, sink.port) as p:
        c = connect(p)
        c.sendall(b"x")
        assert wait_for(lambda: sink.data() == b"x")
        with p.blackhole():
            c.close()
            time.sleep(0.2)
            assert sink.endings == []  # half-open: only keepalive could tell
        assert wait_for(lambda: sink.endings == ["eof"])


# -- refuse ------------------------------------------------------------------------------------
def test_refuse_new_connections_keeps_existing(proxy):
    with connect(proxy) as c:
        with proxy.refuse():
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(proxy.address, timeout=1)
            assert rtt(c) < 0.05
        with connect(proxy) as again:
            assert rtt(again) < 0.05
    assert proxy.stats().connections_seen == 2


# -- drop and corrupt --------------------------------------------------------------------------
def test_corrupt_at_offset_spanning_reads(sink):
    with FaultProxy(sink.host, sink.port) as p:
        with p.corrupt("up", at=3, length=4, xor=0x20) as fault, connect(p) as c:
            c.sendall(b"abcde")
            assert wait_for(lambda: len(sink.data()) == 5)
            c.sendall(b"fghij")
            assert wait_for(lambda: len(sink.data()) == 10)
        assert bytes(sink.received[0]) == b"abcDEFGhij"
        assert fault.hits == 1


def test_corrupt_after_n_bytes_on_open_connection(proxy):
    with connect(proxy) as c:
        c.sendall(b"0123456789")
        recv_exactly(c, 10)
        with proxy.corrupt("down", after=2):
            c.sendall(b"abcdef")
            assert recv_exactly(c, 6) == b"ab" + bytes([ord("c") ^ 0xFF]) + b"def"
            c.sendall(b"abc")  # once per connection
            assert recv_exactly(c, 3) == b"abc"


def test_drop_matching_pattern_each_connection(sink):
    with FaultProxy(sink.host, sink.port) as p, p.drop("up", match=b"secret") as fault:
        for _ in range(2):
            with connect(p) as c:
                c.sendall(b"topic/secret/value secret")
        assert wait_for(lambda: len(sink.endings) == 2)
    assert [bytes(r) for r in sink.received] == [b"topic//value secret"] * 2
    assert fault.hits == 2


def test_drop_at_offset(sink):
    with FaultProxy(sink.host, sink.port) as p, p.drop("up", at=0, length=2), connect(p) as c:
        c.sendall(b"xxpayload")
        assert wait_for(lambda: sink.data() == b"payload")


def test_corrupt_one_direction_only(proxy, server):
    with connect(proxy) as c, proxy.corrupt("down", at=0):
        c.sendall(b"A")
        assert recv_exactly(c, 1) == bytes([ord("A") ^ 0xFF])
        assert bytes(server.received[0]) == b"A"


# -- schedules ---------------------------------------------------------------------------------
def test_schedule_runs_faults_in_order(proxy, server):
    with connect(proxy) as c:
        sched = proxy.schedule([(0.2, "latency", 0.3, {"ms": 40}), (0.0, "blackhole", 0.15)])
        c.sendall(b"a")
        start = time.perf_counter()
        assert recv_exactly(c, 1) == b"a"
        assert time.perf_counter() - start >= 0.1  # held by the blackhole
        time.sleep(0.25 - (time.perf_counter() - start))
        assert rtt(c, 1) >= 0.08  # inside the latency window
        sched.wait(2)
        assert rtt(c) < 0.05
    assert [e[1] for e in sched.events] == ["start blackhole", "end blackhole", "start latency", "end latency"]
    assert sched.done


def test_clear_faults_ends_everything_in_force(proxy):
    with connect(proxy) as c:
        faults = [proxy.latency(50), proxy.blackhole(), proxy.refuse(), proxy.corrupt(after=0)]
        sched = proxy.schedule([(5.0, "cut", 1.0)])
        proxy.clear_faults()
        assert not any(f.active for f in faults) and sched.done
        assert rtt(c) < 0.02
        with connect(proxy) as again:
            assert rtt(again) < 0.02


def test_schedule_cut_then_client_reconnects(proxy):
    c = connect(proxy)
    sched = proxy.schedule([(0.05, "cut", 0.2)])
    with pytest.raises(ConnectionResetError):
        c.recv(1)
    c.close()
    sched.wait(2)
    with connect(proxy) as again:
        assert rtt(again) < 0.05


@pytest.mark.parametrize("entries, message", [
    ([(0, "cut", 1.0), (0.5, "blackhole", 1.0)], "overlaps cut"),
    ([(0, "blackhole", 0)], "duration 0 s must be above zero"),
    ([(0, "refuse", -1)], "duration -1 s must be above zero"),
    ([(-1, "refuse", 1)], "start -1 s must be zero or more"),
    ([(0, "flood", 1)], "unknown fault 'flood'"),
    ([(0, "latency", 1, {"msec": 3})], "bad arguments"),
    ([(0, "cut")], "expected \\(at_s, fault, duration_s"),
    ([], "no entries"),
])
def test_schedule_bad_input(proxy, entries, message):
    with pytest.raises(ValueError, match=message):
        proxy.schedule(entries)


def test_second_overlapping_schedule_is_rejected(proxy):
    first = proxy.schedule([(0.0, "refuse", 1.0)])
    with pytest.raises(ValueError, match="overlaps a schedule already running"):
        proxy.schedule([(0.5, "latency", 1.0, {"ms": 5})])
    later = proxy.schedule([(1.2, "latency", 0.1, {"ms": 5})])  # after the first: fine
    first.cancel()
    later.cancel()
    assert first.done and later.done


def test_schedule_cut_with_no_connection_reports_at_wait(proxy):
    sched = proxy.schedule([(0.0, "cut", 0.05)])
    with pytest.raises(NetFaultError, match="no open connection"):
        sched.wait(2)


# -- bad input and lifetime --------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda p: p.latency(-1), "latency: ms=-1"),
    (lambda p: p.latency(0), "not both zero"),
    (lambda p: p.latency(5, direction="sideways"), "direction 'sideways'"),
    (lambda p: p.bandwidth(0), "bytes/s must be above zero"),
    (lambda p: p.corrupt(at=1, match=b"x"), "exactly one of"),
    (lambda p: p.corrupt(match=b""), "non-empty bytes"),
    (lambda p: p.drop(at=0, length=0), "length 0 must be above zero"),
    (lambda p: p.corrupt(at=0, xor=0), "xor 0"),
    (lambda p: p.cut(mode="gently"), "mode 'gently'"),
])
def test_fault_bad_input(proxy, call, message):
    with pytest.raises(ValueError, match=message):
        call(proxy)


def test_conflicting_faults_are_rejected(proxy):
    with proxy.latency(5, direction="up"):
        with pytest.raises(NetFaultError, match="latency already set on direction 'up'"):
            proxy.latency(5)
        with proxy.latency(5, direction="down"):  # the other direction is free
            pass
    with proxy.refuse():
        with pytest.raises(NetFaultError, match="already refusing"):
            proxy.refuse()


def test_close_releases_thread_and_sockets(server):
    fds = len(os.listdir("/proc/self/fd"))
    p = FaultProxy(server.host, server.port).start()
    clients = [connect(p) for _ in range(3)]
    for c in clients:
        c.sendall(b"x")
        recv_exactly(c, 1)
    p.latency(20)
    p.close()
    p.close()  # idempotent
    for c in clients:
        assert c.recv(1) == b""  # closed with a FIN
        c.close()
    assert not any(t.name.startswith("netfault") for t in threading.enumerate())
    assert wait_for(lambda: len(server.endings) == 3)
    for conn in server.conns:  # the server's side of the three connections
        conn.close()
    assert len(os.listdir("/proc/self/fd")) == fds
    with pytest.raises(NetFaultError, match="not running"):
        p.blackhole()


def test_listen_on_wildcard_advertises_loopback(server):
    with FaultProxy(server.host, server.port, listen_host="0.0.0.0") as p:
        assert p.host == "127.0.0.1"
        with connect(p) as c:
            assert rtt(c) < 0.05
    with FaultProxy(server.host, server.port, listen_host="0.0.0.0", advertise_host="192.0.2.7") as p:
        assert p.address == ("192.0.2.7", p.port)


def test_listen_port_in_use_is_a_clear_error(server):
    with pytest.raises(NetFaultError, match=f"cannot listen on 127.0.0.1:{server.port}"):
        FaultProxy(server.host, server.port, listen_port=server.port).start()


# -- the pytest fixture ------------------------------------------------------------------------
@pytest.fixture
def broker(server):
    return server  # any object with .host and .port


def test_netfault_fixture_proxies_the_broker(netfault, server):
    assert netfault.upstream == (server.host, server.port)
    with connect(netfault) as c, netfault.latency(20, direction="up"):
        assert rtt(c, 1) >= 0.02
    assert netfault.stats().connections_seen == 1
