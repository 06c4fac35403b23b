"""MQTT-SN path of the harness: a MicroPython (unix port) node -> UDP -> the harness's MQTT-SN
gateway -> amqtt -> the recorder, beside plain MQTT (umqtt.simple -> amqtt -> the recorder)
measured in the same run.

Measures:
  gateway_publish_p50_ms / _p99_ms   QoS 1 publish over MQTT-SN, node clock (time.time_ns) ->
                                     recorded by Telemetry; one at a time, each acknowledged
  mqtt_publish_p50_ms / _p99_ms      the same with a plain MQTT QoS 1 publish (the baseline)
  gateway_latency_ratio              gateway p50 / MQTT p50
  gateway_msgs_s                     QoS 0 stream through the gateway, at the recorder
  gateway_qos1_msgs_s                QoS 1 stream through the gateway (each waits for its PUBACK)
  mqtt_msgs_s                        QoS 0 stream over plain MQTT, at the recorder
  gateway_qos0_lost                  QoS 0 datagrams that never reached the recorder
Throughput = (messages - 1) / (last arrival - first arrival) at the recorder; best of --rounds,
the MQTT-SN and MQTT runs interleaved (the machine is shared and 2-core). Prints one JSON object
as its last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from micropython_hil.board.unix_port import find_micropython
from micropython_hil.deploy import packages
from micropython_hil.mqtt import AmqttBroker, Telemetry
from micropython_hil.mqttsn import Gateway
from micropython_hil.tether import Tether

LIB = Path(__file__).resolve().parents[1] / "firmware_under_test" / "common" / "lib"

SN_PUBLISHER = """
import time, mqttsn
c = mqttsn.Client("bench-sn", ({host!r}, {port}), retry_ms=2000, retries=3)
c.connect()
c.register("bench/sn")
if {latency}:
    for i in range({n}):
        c.publish("bench/sn", str(time.time_ns()), 1)
else:
    for i in range({n}):
        c.publish("bench/sn", str(time.time_ns()) + "." + "x" * 40, {qos})
c.disconnect()
"""

MQTT_PUBLISHER = """
import time
from umqtt.simple import MQTTClient
c = MQTTClient("bench-mqtt", {host!r}, {port})
c.connect()
c.sock.setsockopt(6, 1, 1)  # TCP_NODELAY: umqtt writes each packet in pieces
if {latency}:
    for i in range({n}):
        c.publish(b"bench/mqtt", str(time.time_ns()), False, 1)
else:
    for i in range({n}):
        c.publish(b"bench/mqtt", str(time.time_ns()) + "." + "x" * 40, False, {qos})
c.disconnect()
"""


def run(script: str, path: str, tether: Tether) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)
    try:
        proc = tether.popen([find_micropython(), f.name], env={"MICROPYPATH": path},
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
        Path(f.name).unlink()


def stream(telemetry: Telemetry, topic: str, n: int, script: str, path: str, tether: Tether) -> tuple[float, int]:
    """Messages per second at the recorder, and how many never arrived."""
    arrivals: list[float] = []
    done = threading.Event()

    def count(t, *_rest) -> None:
        if t == topic:
            arrivals.append(time.perf_counter())
            if len(arrivals) == n:
                done.set()

    telemetry.broker.add_listener(count)
    try:
        run(script, path, tether)
        done.wait(10)
    finally:
        telemetry.broker.remove_listener(count)
    if len(arrivals) < 2:
        raise SystemExit(f"only {len(arrivals)} of {n} messages on {topic} arrived")
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), n - len(arrivals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-messages", type=int, default=500)
    parser.add_argument("--stream-messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    umqtt = packages.ensure(["umqtt.simple"])
    sn_path, mqtt_path = f".frozen:{LIB}", f".frozen:{umqtt}"
    tether = Tether("bench-mqttsn")
    sn_lat: list[float] = []
    mqtt_lat: list[float] = []
    sn_rate, sn_q1_rate, mqtt_rate, lost = [], [], [], []
    try:
        with AmqttBroker() as broker, Telemetry(broker) as telemetry, Gateway(broker) as gw:
            sn_args = dict(host=gw.host, port=gw.port)
            mqtt_args = dict(host=broker.host, port=broker.port)
            n = args.latency_messages
            for i in range(args.rounds):
                for kind in (("sn", "mqtt") if i % 2 == 0 else ("mqtt", "sn")):
                    mark = telemetry.mark()
                    if kind == "sn":
                        run(SN_PUBLISHER.format(latency=True, n=n, qos=1, **sn_args), sn_path, tether)
                        found = telemetry.collect(n, "bench/sn", timeout=60, since=mark)
                        sn_lat += [(m.arrival - int(m.payload) / 1e9) * 1e3 for m in found[n // 10:]]
                    else:
                        run(MQTT_PUBLISHER.format(latency=True, n=n, qos=1, **mqtt_args), mqtt_path, tether)
                        found = telemetry.collect(n, "bench/mqtt", timeout=60, since=mark)
                        mqtt_lat += [(m.arrival - int(m.payload) / 1e9) * 1e3 for m in found[n // 10:]]
                m = args.stream_messages
                rate, missing = stream(telemetry, "bench/sn", m, SN_PUBLISHER.format(latency=False, n=m, qos=0,
                                                                                       **sn_args), sn_path, tether)
                sn_rate.append(rate)
                lost.append(missing)
                sn_q1_rate.append(stream(telemetry, "bench/sn", m // 4,
                                         SN_PUBLISHER.format(latency=False, n=m // 4, qos=1, **sn_args),
                                         sn_path, tether)[0])
                mqtt_rate.append(stream(telemetry, "bench/mqtt", m,
                                        MQTT_PUBLISHER.format(latency=False, n=m, qos=0, **mqtt_args),
                                        mqtt_path, tether)[0])
                telemetry.clear()
    finally:
        tether.close()
    sn_lat.sort()
    mqtt_lat.sort()

    def p99(values: list[float]) -> float:
        return values[min(len(values) - 1, int(len(values) * 0.99))]

    result = {
        "gateway_publish_p50_ms": round(statistics.median(sn_lat), 3),
        "gateway_publish_p99_ms": round(p99(sn_lat), 3),
        "mqtt_publish_p50_ms": round(statistics.median(mqtt_lat), 3),
        "mqtt_publish_p99_ms": round(p99(mqtt_lat), 3),
        "gateway_latency_ratio": round(statistics.median(sn_lat) / statistics.median(mqtt_lat), 2),
        "gateway_msgs_s": round(max(sn_rate)),
        "gateway_qos1_msgs_s": round(max(sn_q1_rate)),
        "mqtt_msgs_s": round(max(mqtt_rate)),
        "gateway_qos0_lost": min(lost),
    }
    print(f"MQTT-SN gateway: p50 {result['gateway_publish_p50_ms']} ms vs MQTT {result['mqtt_publish_p50_ms']} ms, "
          f"{result['gateway_msgs_s']} msgs/s vs {result['mqtt_msgs_s']}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
