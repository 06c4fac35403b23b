"""Cost of the simulated ESP32's shims, and how fast fast time runs.

Runs on the MicroPython unix port under a Simulator (real processes, the real control channel):
  pin_value_us             one machine.Pin.value() read (input pin driven by the host)
  i2c_readfrom_mem_8_us    one I2C.readfrom_mem(addr, reg, 8) from the simulated BME280
  plain_call_us            one call of an empty MicroPython function, same run, same loop
  shim_call_overhead_us    each of the two above minus plain_call_us
  virtual_seconds_per_wall_second  a firmware that sleeps 10 minutes per loop, in fast time
Prints one JSON object as its last line. Usage: python benchmarks/bench_sim.py [--loops N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from micropython_hil.plugin.sim import SimProcess  # noqa: E402
from micropython_hil.sim.simulator import Simulator  # noqa: E402

# Each loop body runs N times; an empty loop of the same shape is subtracted.
CALLS = """
import machine, time, json
N = {loops}
pin = machine.Pin(4, machine.Pin.IN)
i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))
def f():
    pass
def timed(body):
    best = None
    for _ in range(5):
        t = time.ticks_us()
        body()
        d = time.ticks_diff(time.ticks_us(), t)
        best = d if best is None or d < best else best
    return best
def empty():
    for _ in range(N):
        pass
def plain():
    for _ in range(N):
        f()
def pin_value():
    v = pin.value
    for _ in range(N):
        v()
def i2c_read():
    r = i2c.readfrom_mem
    for _ in range(N // 10):
        r(0x76, 0xF7, 8)
base = timed(empty)
out = {{"plain": (timed(plain) - base) / N, "pin": (timed(pin_value) - base) / N,
        "i2c": (timed(i2c_read) - base / 10) / (N // 10)}}
print(json.dumps(out))
"""

SLEEPER = """
import time
for i in range({cycles}):
    time.sleep(600)
print(time.ticks_ms() // 1000)
"""


def measure_calls(sp: SimProcess, loops: int) -> dict:
    with Simulator(time_mode="real") as sim:
        sim.pin(4).set(1)
        sim.sensor("bme280").set(temperature=21.5)
        r = sp.run(sim, CALLS.format(loops=loops), timeout=300)
    if r.returncode != 0:
        raise SystemExit(f"benchmark firmware failed:\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure_fast_time(sp: SimProcess, cycles: int) -> float:
    with Simulator(time_mode="fast") as sim:
        start = time.monotonic()
        r = sp.run(sim, SLEEPER.format(cycles=cycles), timeout=300)
        wall = time.monotonic() - start
    if r.returncode != 0:
        raise SystemExit(f"sleeper firmware failed:\n{r.stdout}{r.stderr}")
    virtual = int(r.stdout.strip().splitlines()[-1])
    return virtual / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", type=int, default=20000, help="calls per timed loop")
    ap.add_argument("--cycles", type=int, default=144, help="10-minute sleeps (144 = one day)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as root:
        sp = SimProcess(Path(root))
        try:
            calls = measure_calls(sp, args.loops)
            vps = measure_fast_time(sp, args.cycles)
        finally:
            sp.close()
    plain = calls["plain"]
    result = {
        "pin_value_us": round(calls["pin"], 3),
        "i2c_readfrom_mem_8_us": round(calls["i2c"], 3),
        "plain_call_us": round(plain, 3),
        "shim_call_overhead_us": {"pin_value": round(calls["pin"] - plain, 3),
                                  "i2c_readfrom_mem_8": round(calls["i2c"] - plain, 3)},
        "virtual_seconds_per_wall_second": round(vps, 1),
        "loops": args.loops,
        "fast_time_cycles": args.cycles,
    }
    print(f"Pin.value(): {result['pin_value_us']} us, I2C readfrom_mem(8): "
          f"{result['i2c_readfrom_mem_8_us']} us, plain call: {result['plain_call_us']} us; "
          f"fast time: {result['virtual_seconds_per_wall_second']} virtual s per wall s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
