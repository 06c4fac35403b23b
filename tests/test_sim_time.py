"""Virtual time of the simulated ESP32: every clock function in real, fast and stepped mode,
machine.Timer, asyncio, sim.advance, the RTC start date, and MQTT publishes in board time."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import pytest

from micropython_hil.plugin.sim import sim_process  # noqa: F401  (fixture)
from micropython_hil.sim.simulator import Simulator, SimulatorError

# Sleeps 2.5 board seconds through each sleep function; reports what every clock function saw.
CLOCKS = """
import time, json, machine
r = {"t0": time.time(), "lt": list(time.localtime()), "gm": list(time.gmtime(0)),
     "mk": time.mktime((2026, 3, 1, 12, 0, 0, 0, 0))}
ms, us, cpu, ns = time.ticks_ms(), time.ticks_us(), time.ticks_cpu(), time.time_ns()
time.sleep(1)
r["cpu"] = time.ticks_diff(time.ticks_cpu(), cpu) // 1000000   # 160 MHz: wraps after 3.3 s
time.sleep_ms(1000)
time.sleep_us(400000)
machine.lightsleep(100)
r["ms"] = time.ticks_diff(time.ticks_ms(), ms)
r["us"] = time.ticks_diff(time.ticks_us(), us)
r["ns"] = (time.time_ns() - ns) // 1000000
r["dt"] = time.time() - r["t0"]
r["wrap"] = [time.ticks_add(2**30 - 1, 1), time.ticks_diff(0, 2**30 - 1)]
print(json.dumps(r))
"""


def run_json(sim_process, sim, code, timeout=30):
    r = sim_process.run(sim, code, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def check_clocks(r, tolerance_ms):
    for key, want in (("ms", 2500), ("us", 2500000), ("ns", 2500)):
        scale = 1000 if key == "us" else 1
        assert want <= r[key] <= want + tolerance_ms * scale, (key, r[key])
    assert 160 <= r["cpu"] < 200 and r["dt"] in (2, 3)
    assert r["gm"][:6] == [2000, 1, 1, 0, 0, 0] and len(r["gm"]) == 8   # the ESP32's epoch
    assert r["mk"] == 825681600          # 2026-03-01 12:00 in seconds since 2000
    assert r["wrap"] == [0, 1]           # ticks wrap at 2**30 as on the chip


@pytest.mark.parametrize("mode", ["real", "fast"])
def test_clock_functions_in_real_and_fast_time(sim_process, mode):
    with Simulator(time_mode=mode, rtc_start="2026-05-04T03:02:01") as sim:
        start = time.monotonic()
        r = run_json(sim_process, sim, CLOCKS)
        wall = time.monotonic() - start
    check_clocks(r, tolerance_ms=250)  # both modes let wall time flow between the sleeps
    assert r["lt"][:6] == [2026, 5, 4, 3, 2, 1]
    if mode == "real":
        assert wall >= 2.5
    else:
        assert wall < 2.0   # the sleeps jumped


def test_clock_functions_in_stepped_time(sim_process):
    with Simulator(time_mode="stepped") as sim:
        p = sim_process.start(sim, CLOCKS)
        sim.wait_for_board()
        sim.advance(seconds=1)      # returns when the board sleeps again, past the new time
        sim.advance(seconds=1.5)    # the board runs to its end at 2.5 s
        out = sim_process.finish(p)
    assert out.returncode == 0, out.stdout
    r = json.loads(out.stdout.strip().splitlines()[-1])
    check_clocks(r, tolerance_ms=0)  # stepped time stands still unless advanced: exact
    assert r["lt"][:6] == [2000, 1, 1, 0, 0, 0]


def test_stepped_time_moves_only_in_waits_and_advance_reports_a_board_that_never_sleeps(sim_process):
    with Simulator(time_mode="stepped", reply_timeout=1.0) as sim:
        p = sim_process.start(sim, "import time, machine\nt = time.ticks_us()\n"
                                   "machine.Pin(2, machine.Pin.OUT).on()\n"
                                   "while machine.Pin(4).value() == 0:\n    pass\n"
                                   "print('busy', time.ticks_diff(time.ticks_us(), t))\n"
                                   "time.sleep(10)\nprint('slept', time.ticks_ms())")
        while sim.pin(2).level != 1:
            time.sleep(0.01)
        with pytest.raises(SimulatorError, match="never sleeps"):
            sim.advance(seconds=3)      # the board spins without a wait: its clock stands
        sim.pin(4).set(1)
        sim.advance(seconds=20)         # the sleep ends at 10 s, then the run ends
        r = sim_process.finish(p)
    assert r.stdout.splitlines() == ["busy 0", "slept 10000"]


def test_timer_callbacks_follow_the_virtual_clock(sim_process):
    code = """
import machine, time, json
ticks = []
one = []
t0 = time.ticks_ms()
tp = machine.Timer(0, mode=machine.Timer.PERIODIC, period=250,
                   callback=lambda t: ticks.append(time.ticks_diff(time.ticks_ms(), t0)))
to = machine.Timer(1)
to.init(mode=machine.Timer.ONE_SHOT, period=600, callback=lambda t: one.append(time.ticks_diff(time.ticks_ms(), t0)))
time.sleep(1.1)
tp.deinit()
time.sleep(1)
try:
    machine.Timer(7)
except ValueError as e:
    bad = str(e)
print(json.dumps([ticks, one, bad]))
"""
    with Simulator(time_mode="fast") as sim:
        start = time.monotonic()
        ticks, one, bad = run_json(sim_process, sim, code)
        assert time.monotonic() - start < 2.0
    # Fast time still flows with the wall clock between sleeps: a few ms of slack.
    assert all(abs(t - w) <= 25 for t, w in zip(ticks, [250, 500, 750, 1000])) and len(ticks) == 4
    assert len(one) == 1 and abs(one[0] - 600) <= 25 and bad == "invalid Timer number"
    with Simulator(time_mode="stepped") as sim:
        p = sim_process.start(sim, code)
        sim.wait_for_board()
        sim.advance(seconds=2.1)
        r = sim_process.finish(p)
    assert json.loads(r.stdout.strip().splitlines()[-1])[:2] == [[250, 500, 750, 1000], [600]]


ASYNC = """
import asyncio, time, json
log = []
async def every(name, period_s, n):
    for _ in range(n):
        await asyncio.sleep(period_s)
        log.append([name, time.ticks_ms()])
async def short():
    await asyncio.sleep_ms(100)
async def main():
    t = time.ticks_ms()
    await asyncio.gather(every("a", 600, 3), every("b", 900, 2), short())
    return time.ticks_diff(time.ticks_ms(), t)
took = asyncio.run(main())
print(json.dumps([took, log]))
"""


def test_asyncio_sleeps_jump_in_fast_time(sim_process):
    with Simulator(time_mode="fast") as sim:
        start = time.monotonic()
        took, log = run_json(sim_process, sim, ASYNC)
        assert time.monotonic() - start < 2.0
    assert took // 1000 == 1800
    assert sorted((t // 1000, n) for n, t in log) == [(600, "a"), (900, "b"), (1200, "a"),
                                                      (1800, "a"), (1800, "b")]


def test_asyncio_sleeps_wait_for_advance_in_stepped_time(sim_process):
    with Simulator(time_mode="stepped") as sim:
        p = sim_process.start(sim, ASYNC)
        sim.wait_for_board()
        sim.advance(seconds=1000)
        assert sim.board_time_us == 1000 * 10**6
        sim.advance(seconds=800)
        r = sim_process.finish(p)
    took, log = json.loads(r.stdout.strip().splitlines()[-1])
    assert took == 1800000 and sorted(t for _, t in log) == [600000, 900000, 1200000, 1800000, 1800000]


def test_advance_jumps_a_sleeping_board_in_real_time(sim_process):
    with Simulator(time_mode="real") as sim:
        p = sim_process.start(sim, "import time, machine\nt = time.time()\n"
                                   "machine.Pin(2, machine.Pin.OUT).on()\ntime.sleep(3600)\n"
                                   "print(time.time() - t)")
        while sim.pin(2).level != 1:    # the board is about to sleep
            time.sleep(0.01)
        sim.advance(seconds=3600)
        r = sim_process.finish(p, timeout=10)
    assert r.stdout.strip() == "3600"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mosquitto(tmp_path):
    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if exe is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=5)


def test_publishes_are_stamped_in_board_time(sim_process, mosquitto):
    """A firmware that publishes every 10 minutes: 6 publishes in one virtual hour, in seconds."""
    from micropython_hil.deploy import packages
    try:
        packages.install(["umqtt.simple"], sim_process.root / "lib")
    except (packages.PackageError, OSError) as exc:
        pytest.skip(f"package index unreachable, cannot fetch umqtt.simple: {exc}")
    code = f"""
import time
from umqtt.simple import MQTTClient
c = MQTTClient("dev1", "127.0.0.1", port={mosquitto})
c.connect()
c.sock.setsockopt(6, 1, 1)
for i in range(6):
    c.publish(b"sensors/dev1/temp", b'{{"n": %d}}' % i, qos=1)
    time.sleep(600)
c.disconnect()
"""
    with Simulator(time_mode="fast") as sim:
        seen = []
        sim.on_publish.append(seen.append)
        start = time.monotonic()
        r = sim_process.run(sim, code)
        wall = time.monotonic() - start
        assert r.returncode == 0, r.stdout + r.stderr
    assert wall < 5.0
    assert [p.topic for p in sim.publishes] == ["sensors/dev1/temp"] * 6 and seen == sim.publishes
    stamps = [p.board_time_us for p in sim.publishes]
    gaps = [(b - a) / 1e6 for a, b in zip(stamps, stamps[1:])]
    assert all(600 <= g < 600.5 for g in gaps), gaps
    assert all(p.payload_len == len(b'{"n": 0}') for p in sim.publishes)
