"""Fuzzing throughput and recovery of the harness against home_automation on the simulated ESP32.

Measures:
  examples_per_s  payloads checked per second by Fuzzer.run: drawn by hypothesis, published
                  through the broker to the running firmware (fast board time), every reply
                  judged by the oracle, a liveness ping after each batch (best of --rounds)
  reset_ms        a killed board (its process SIGKILLed) brought back: board reset, firmware
                  started, online on the broker, state re-read (median of --resets)
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from micropython_hil.board.board import Board  # noqa: E402
from micropython_hil.mqtt.broker import MosquittoBroker, make_broker  # noqa: E402
from micropython_hil.deploy.firmware import Firmware  # noqa: E402
from micropython_hil.fuzz import Fuzzer  # noqa: E402
from micropython_hil.sim.simulator import Simulator  # noqa: E402

HOME = Path(__file__).resolve().parent.parent / "firmware_under_test" / "home_automation"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--broker", default="auto", help="amqtt, mosquitto or auto (mosquitto if installed)")
    ap.add_argument("--examples", type=int, default=150, help="hypothesis examples per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--resets", type=int, default=7)
    args = ap.parse_args()
    kind = args.broker
    if kind == "auto":
        kind = "mosquitto" if MosquittoBroker.available() is None else "amqtt"
    broker = make_broker(kind).start()
    sim = Simulator(time_mode="fast", wifi_connect_s=0)
    board = Board.unix(sim=sim)
    fuzzer = Fuzzer(board, Firmware(HOME), broker, database=None)
    try:
        fuzzer.start()
        rates = []
        for r in range(args.rounds):
            before = fuzzer.stats.payloads, fuzzer.stats.seconds
            fuzzer.run(examples=args.examples, seed=r)
            n, s = fuzzer.stats.payloads - before[0], fuzzer.stats.seconds - before[1]
            rates.append(n / s)
            print(f"round {r}: {n} payloads in {s:.2f} s = {n / s:.0f}/s", file=sys.stderr)
        resets = []
        for _ in range(args.resets):
            os.kill(board.port.pid, signal.SIGKILL)
            while board.port.alive:
                time.sleep(0.001)
            began = time.perf_counter()
            fuzzer.reset()
            resets.append((time.perf_counter() - began) * 1000)
            fuzzer.check([b'{"op":"ping"}'])  # really back
        print(f"resets (ms): {[round(x) for x in resets]}", file=sys.stderr)
        print(json.dumps({"examples_per_s": round(max(rates), 1), "reset_ms": round(statistics.median(resets), 1),
                          "broker": kind, "payloads": fuzzer.stats.payloads,
                          "rounds_per_s": [round(x, 1) for x in rates]}))
    finally:
        fuzzer.close()
        board.close()
        sim.close()
        broker.stop()


if __name__ == "__main__":
    main()
