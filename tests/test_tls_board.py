"""The simulated board's ssl (simulated_boards/ssl.py): the port's TLS over the shim socket, and
each MQTT PUBLISH written through it stamped with the board's clock, however it is written."""

from __future__ import annotations

import time

from micropython_hil.mqtt.broker import AmqttBroker
from micropython_hil.mqtt.telemetry import Telemetry
from micropython_hil.mqtt.tls import pem_to_der
from micropython_hil.plugin.sim import sim_process  # noqa: F401  (fixture)
from micropython_hil.sim.simulator import Simulator

# Raw MQTT through ssl: a CONNECT, then PUBLISHes written whole, in pieces, byte by byte, with a
# payload longer than the parser keeps, at QoS 0 and 1; then select.poll on the TLS socket.
CODE = """
import select, socket, ssl, time

def rd(name):
    with open(name, "rb") as f:
        return f.read()

def publish(topic, payload, qos=0, pid=1):
    body = bytes([len(topic) >> 8, len(topic) & 255]) + topic + (bytes([0, pid]) if qos else b"") + payload
    n, size = len(body), b""
    while True:
        size += bytes([(n & 127) | (128 if n > 127 else 0)])
        n >>= 7
        if not n:
            break
    return bytes([0x30 | qos << 1]) + size + body

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(cadata=rd("ca.der"))
ctx.load_cert_chain(rd("cert.der"), rd("key.der"))
raw = socket.socket()
raw.connect(socket.getaddrinfo("127.0.0.1", PORT)[0][-1])
raw.settimeout(5)
raw.setsockopt(6, 1, 1)  # TCP_NODELAY, as firmware sets it: no 40 ms delayed-ACK stalls
s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
s.write(b"\\x10\\x10\\x00\\x04MQTT\\x04\\x02\\x00\\x3c\\x00\\x04dev1")
assert s.read(4) == b"\\x20\\x02\\x00\\x00"
s.write(publish(b"dev1/whole", b"1"))
p = publish(b"dev1/pieces", b"x" * 3000, qos=1, pid=7)
for i in range(0, len(p), 700):
    s.write(p[i:i + 700])
poller = select.poll()
poller.register(s, select.POLLIN)
assert poller.poll(5000), "no PUBACK"
assert s.read(4) == b"\\x40\\x02\\x00\\x07"
time.sleep(600)
for b in publish(b"dev1/bytes", b"abc", qos=1, pid=8):
    s.write(bytes([b]))
assert s.read(4) == b"\\x40\\x02\\x00\\x08"
s.write(b"\\xe0\\x00")
s.close()
try:
    import ussl
    print("ussl imported")
except ImportError:
    print("no ussl, as on the chip")
print("done")
"""


# The same over asyncio's streams: the TLS socket in its poll loop, the handshake non-blocking.
ASYNC_CODE = """
import asyncio, ssl

def rd(name):
    with open(name, "rb") as f:
        return f.read()

async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=rd("ca.der"))
    ctx.load_cert_chain(rd("cert.der"), rd("key.der"))
    r, w = await asyncio.open_connection("127.0.0.1", PORT, ssl=ctx)
    w.write(b"\\x10\\x10\\x00\\x04MQTT\\x04\\x02\\x00\\x3c\\x00\\x04dev1")
    await w.drain()
    assert await r.readexactly(4) == b"\\x20\\x02\\x00\\x00"
    for i in range(3):
        w.write(b"\\x30\\x07\\x00\\x03a/b%02d" % i)
        await w.drain()
        await asyncio.sleep(60)
    w.write(b"\\xe0\\x00")
    await w.drain()
    w.close()
    await w.wait_closed()
    print("done")

asyncio.run(main())
"""


def _board_files(root, broker, cert=True):
    """The CA, and the board's certificate and key, as DER files in the board's folder."""
    files = {"ca.der": broker.tls.ca_pem}
    if cert:
        pair = broker.tls.client_cert("dev1")
        files.update({"cert.der": pair.cert_pem, "key.der": pair.key_pem})
    for name, pem in files.items():
        (root / name).write_bytes(pem_to_der(pem))


def test_publishes_through_tls_are_stamped_in_board_time(sim_process):
    with AmqttBroker(tls_mode="mutual") as broker, Telemetry(broker) as telemetry:
        _board_files(sim_process.root, broker)
        with Simulator(time_mode="fast") as sim:
            start = time.monotonic()
            run = sim_process.run(sim, CODE.replace("PORT", str(broker.port)))
            assert run.returncode == 0, run.stdout + run.stderr
            assert time.monotonic() - start < 5
        assert run.stdout.splitlines()[-2:] == ["no ussl, as on the chip", "done"]
        telemetry.collect(3, "dev1/#", timeout=5)
    assert [(p.topic, p.payload_len) for p in sim.publishes] == [
        ("dev1/whole", 1), ("dev1/pieces", 3000), ("dev1/bytes", 3)]
    stamps = [p.board_time_us for p in sim.publishes]
    assert 600 <= (stamps[2] - stamps[1]) / 1e6 < 601  # the sleep between them, in board time


def test_a_board_without_a_certificate_is_refused(sim_process):
    code = CODE.replace('ctx.load_cert_chain(rd("cert.der"), rd("key.der"))\n', "")
    with AmqttBroker(tls_mode="mutual") as broker:
        _board_files(sim_process.root, broker, cert=False)
        with Simulator(time_mode="fast") as sim:
            run = sim_process.run(sim, code.replace("PORT", str(broker.port)))
    assert run.returncode != 0 and "OSError" in run.stdout + run.stderr
    assert not sim.publishes


def test_asyncio_streams_over_tls_are_stamped_too(sim_process):
    with AmqttBroker(tls_mode="mutual") as broker:
        _board_files(sim_process.root, broker)
        with Simulator(time_mode="fast") as sim:
            run = sim_process.run(sim, ASYNC_CODE.replace("PORT", str(broker.port)))
            assert run.returncode == 0 and run.stdout.strip() == "done", run.stdout + run.stderr
    assert [(p.topic, p.payload_len) for p in sim.publishes] == [("a/b", 2)] * 3
    stamps = [p.board_time_us / 1e6 for p in sim.publishes]
    assert all(60 <= b - a < 60.5 for a, b in zip(stamps, stamps[1:])), stamps
