"""MQTT path of the harness: a MicroPython (unix port, umqtt.simple) publisher to the recorder.

Measures, in one run:
  latency_qos1_p50_ms / _p99_ms   publish (device clock, time.time_ns) -> recorded by Telemetry, amqtt
  capture_throughput_msgs_s       QoS 1 stream through amqtt to a subscriber, recorder on
  amqtt_bare_throughput_msgs_s    the same without the recorder (the baseline)
  mosquitto_throughput_msgs_s     the same flood through mosquitto, recorded by the '#' capture
Throughput = messages / (last arrival - first arrival) at the receiving end; best of --rounds
(the machine is shared and 2-core: single rounds vary by +-40%, so compare bests).
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from micropython_hil.deploy import packages
from micropython_hil.mqtt import AmqttBroker, MosquittoBroker, Telemetry

FLOOD_QOS = 1  # QoS 1 keeps the flow steady (no backlog of thousands of tasks inside amqtt)

PUBLISHER = """
import time
from umqtt.simple import MQTTClient
c = MQTTClient("bench-pub", {host!r}, {port})
c.connect()
c.sock.setsockopt(6, 1, 1)  # TCP_NODELAY: umqtt writes each packet in pieces
if {latency}:
    for i in range({n}):
        c.publish(b"bench/lat", str(time.time_ns()), False, 1)
else:
    payload = b"x" * 64
    for i in range({n}):
        c.publish(b"bench/flood", payload, False, {flood_qos})
c.disconnect()
"""


def run_publisher(lib: Path, broker, n: int, latency: bool) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(PUBLISHER.format(host=broker.host, port=broker.port, n=n, latency=latency, flood_qos=FLOOD_QOS))
    try:
        proc = subprocess.Popen(["micropython", script.name], env=dict(os.environ, MICROPYPATH=f".frozen:{lib}"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            raise SystemExit(f"bench publisher failed: {out.decode(errors='replace')}")
    finally:
        os.unlink(script.name)


def latency(lib: Path, n: int) -> tuple[float, float]:
    with AmqttBroker() as broker, Telemetry(broker) as telemetry:
        run_publisher(lib, broker, n, latency=True)
        messages = telemetry.collect(n, "bench/lat", timeout=30)
    lat_ms = [(m.arrival - int(m.payload) / 1e9) * 1e3 for m in messages[n // 10:]]  # skip warm-up
    lat_ms.sort()
    return statistics.median(lat_ms), lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))]


def flood(lib: Path, broker, n: int, record: bool) -> float:
    """Messages per second arriving at the receiving end (a subscriber, or the recorder)."""
    arrivals: list[float] = []
    done = threading.Event()

    def count(*_args) -> None:
        arrivals.append(time.perf_counter())
        if len(arrivals) == n:
            done.set()

    telemetry = Telemetry(broker) if record else None
    receiver = None
    try:
        if telemetry is not None and broker.kind != "amqtt":
            broker.add_listener(count)  # mosquitto: the capture subscription is the receiver
        else:
            receiver = broker.client(on_message=count)
            receiver.subscribe("bench/flood", qos=0)
        run_publisher(lib, broker, n, latency=False)
        if not done.wait(120):
            raise SystemExit(f"only {len(arrivals)} of {n} messages arrived through {broker.kind}")
    finally:
        if receiver is not None:
            receiver.close()
        broker.remove_listener(count)
        if telemetry is not None:
            telemetry.close()
    return (n - 1) / (arrivals[-1] - arrivals[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-messages", type=int, default=1000)
    parser.add_argument("--flood-messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    lib = packages.ensure(["umqtt.simple"])

    p50, p99 = latency(lib, args.latency_messages)
    bare, capture = [], []
    with AmqttBroker() as broker:
        for i in range(args.rounds):  # interleaved, order alternating, so load drift hits both alike
            for record in ((False, True) if i % 2 == 0 else (True, False)):
                (capture if record else bare).append(flood(lib, broker, args.flood_messages, record=record))
    mosquitto = None
    if MosquittoBroker.available() is None:
        with MosquittoBroker() as broker:
            mosquitto = max(flood(lib, broker, args.flood_messages, record=True) for _ in range(args.rounds))
    else:
        print(f"mosquitto skipped: {MosquittoBroker.available()}", file=sys.stderr)
    result = {
        "latency_qos1_p50_ms": round(p50, 3),
        "latency_qos1_p99_ms": round(p99, 3),
        "capture_throughput_msgs_s": round(max(capture)),
        "amqtt_bare_throughput_msgs_s": round(max(bare)),
        "mosquitto_throughput_msgs_s": round(mosquitto) if mosquitto else None,
    }
    print(f"recording cost: {1 - result['capture_throughput_msgs_s'] / result['amqtt_bare_throughput_msgs_s']:.1%} "
          f"of bare amqtt throughput", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
