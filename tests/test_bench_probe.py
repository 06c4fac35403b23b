"""The on-device probe against known workloads on a real unix-port board (simulator in real
time: sleeps and ticks follow the wall clock, so a known sleep takes its real time)."""

import pytest

from micropython_hil.bench import analyse, calibrate, probe
from micropython_hil.errors import BenchError

pytestmark = pytest.mark.sim(time="real")

KNOWN = """\
import time

def empty():
    pass

def spin_200():
    t0 = time.ticks_us()
    while time.ticks_diff(time.ticks_us(), t0) < 200:
        pass

def sleep_500():
    time.sleep_us(500)

def alloc_100():
    return bytearray(100)

_n = [0]

def fails_on_40():
    _n[0] += 1
    if _n[0] == 40:
        1 // 0

def exits_on_30():
    _n[0] += 1
    if _n[0] == 30:
        import sys
        sys.exit(3)

class Counter:
    def __init__(self, start):
        self.n = start

    def tick(self):
        self.n += 1

LIMIT = 5
"""


@pytest.fixture
def known(board):
    board.put_bytes(KNOWN.encode(), "known.py")
    return board


def test_busy_loop_and_sleep_measured_within_tolerance(known):
    spin = analyse(probe(known, "known.spin_200", iterations=200, warmup=5))
    # A busy wait of 200 us on the same clock: never shorter, and the median within 3 %.
    assert spin.raw.min >= 199.0
    assert 199.0 <= spin.stats.median <= 206.0
    sleep = analyse(probe(known, "known.sleep_500", iterations=100, warmup=5))
    # A 500 us sleep through the simulator's real-time clock; Linux adds its timer slack.
    assert 500.0 <= sleep.stats.median <= 750.0
    assert sleep.stats.min >= 495.0


def test_probe_overhead_is_small_and_an_empty_call_costs_about_nothing(known):
    r = analyse(probe(known, "known.empty", iterations=2000, warmup=50))
    assert 0.0 < r.overhead_us < 2.0
    assert r.stats.median < 1.0
    assert r.alloc_max == 0 and r.gc_collections == 0
    assert r.tick_us == 1.0 and r.board_id == "unix:linux:esp32"


def test_allocation_per_call_is_measured(known):
    r = analyse(probe(known, "known.alloc_100", iterations=300, warmup=5, gc="off"))
    # 100 bytes of data plus the bytearray object, in 16-byte GC blocks.
    assert 100 <= r.alloc_median <= 160
    assert r.gc_collections == 0  # gc="off": collections happen between calls, not inside


def test_method_on_an_instance_built_by_setup(known):
    r = probe(known, "known.Counter.tick", setup="known.Counter(7)", prelude="import known", iterations=100, warmup=3)
    assert len(r.durations_us) == 100
    # Samples come back in time order and complete; duration mode stops early.
    short = probe(known, "known.spin_200", iterations=5000, duration_s=0.05, warmup=0)
    # 5000 calls of 200 us would take a second: it stopped near 50 ms (how near depends on the
    # host's load, so only the early stop is asserted, not a count).
    assert 0 < len(short.durations_us) <= 260


@pytest.mark.parametrize("target, options, message", [
    ("nosuch.step", {}, r"unix#\d+: cannot time nosuch.step: module 'nosuch' is not on the board"),
    ("known.nosuch", {}, r"cannot time known.nosuch: 'known' has no attribute 'nosuch' \(is the firmware deployed"),
    ("known.Counter.tick", {}, r"is a method of class Counter: pass setup="),
    ("known.LIMIT", {}, r"'known.LIMIT' is a int, not a function"),
    ("known.fails_on_40", {"warmup": 10}, r"'known.fails_on_40' raised ZeroDivisionError on call 30"),
    ("known.exits_on_30", {"warmup": 5}, r"timing known.exits_on_30 stopped without a result: the firmware crashed"),
    ("known.2bad", {}, r"is not a dotted name"),
])
def test_bad_input_is_a_one_line_error(known, target, options, message):
    with pytest.raises(BenchError, match=message) as info:
        probe(known, target, iterations=100, **options)
    assert len(str(info.value).splitlines()[0]) < 300


def test_bad_options_are_refused(known):
    with pytest.raises(BenchError, match="gc='sometimes': use one of collect, running, off"):
        probe(known, "known.empty", gc="sometimes")
    with pytest.raises(BenchError, match="ticks_cpu does not count on this board"):
        probe(known, "known.empty", clock="cpu", iterations=10)


def test_calibration_scales_to_the_esp32_profile(board):
    cal = calibrate(board)
    assert cal.board_id == "unix:linux:esp32" and cal.reference.startswith("esp32 profile (160 MHz)")
    assert cal.reference_pystones == pytest.approx(1602 * 160 / 240)
    # The unix port on a PC is far faster than a 160 MHz Xtensa; an estimate scales times up.
    assert cal.factor == pytest.approx(cal.pystones / cal.reference_pystones) and cal.factor > 5
