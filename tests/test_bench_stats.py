"""Unit tests of the host-side statistics and reporting of hot-loop benchmarks (no board)."""

import json
import math
import random
import zlib

import pytest

from micropython_hil.bench import BenchResult, ProbeRun, analyse
from micropython_hil.bench.calibration import scaled
from micropython_hil.errors import BenchError
from micropython_hil.bench.report import (compare_to_baseline, histogram_png, load_baseline, read_png_size,
                                  run_document, save_baseline, table)
from micropython_hil.bench.stats import (block_medians, coefficient_of_variation, compare, histogram, quantile,
                                 summarize, trimmed_mean)


def quantized(true_us, n, rng, jitter=0.0):
    """What a 1 us clock read at a random phase reports for calls of `true_us` (+ jitter)."""
    out = []
    for _ in range(n):
        d = true_us + rng.random() * jitter
        phase = rng.random()
        out.append(float(int(phase + d)))  # ticks crossed during the call
    return out


def test_summary_of_known_values():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s.n, s.min, s.max, s.mean) == (5, 1.0, 100.0, 22.0)
    assert s.median == 3.0
    assert s.stdev == pytest.approx(math.sqrt(7610 / 4))
    assert s.jitter == pytest.approx((1 + 1 + 1 + 96) / 4)


def test_quantized_clock_median_and_mean_recover_sub_tick_times():
    rng = random.Random(7)
    for true in (0.3, 5.5, 10.3, 37.8):
        samples = quantized(true, 20000, rng)
        assert trimmed_mean(samples, 0.0) == pytest.approx(true, abs=0.03)
        # Grouped interpolation: within a quarter tick, where the plain median is off by up to 0.5.
        assert quantile(sorted(samples), 0.5, tick=1.0) == pytest.approx(true, abs=0.25)


def test_overhead_subtraction_moves_location_not_spread():
    s = summarize([10.0, 11.0, 12.0, 30.0])
    net = s.minus(2.0)
    assert (net.min, net.median, net.max) == (8.0, s.median - 2.0, 28.0)
    assert (net.stdev, net.jitter) == (s.stdev, s.jitter)
    assert s.minus(100.0).min == 0.0


def test_compare_calls_equal_runs_noise_and_a_shift_a_regression():
    rng = random.Random(3)
    a = [rng.gauss(10.0, 0.4) for _ in range(10)]
    b = [rng.gauss(10.0, 0.4) for _ in range(10)]
    same = compare(a, b)
    assert not same.regressed and same.ci_low < 0 < same.ci_high
    slow = compare(a, [v + 2.0 for v in b])
    assert slow.regressed and slow.delta == pytest.approx(2.0 + same.delta)
    assert compare([v + 2.0 for v in b], a).improved
    # The same shift inside very noisy runs is not called a regression.
    noisy_a = [rng.gauss(10.0, 5.0) for _ in range(10)]
    noisy_b = [rng.gauss(11.0, 5.0) for _ in range(10)]
    assert not compare(noisy_a, noisy_b).regressed


def test_block_medians_follow_time_order():
    values = [1.0] * 50 + [9.0] * 50
    blocks = block_medians(values, blocks=10)
    assert blocks[:5] == [1.0] * 5 and blocks[5:] == [9.0] * 5


def test_histogram_counts_everything_once():
    values = [1.0] * 900 + [2.0] * 95 + [1000.0] * 5
    edges, counts, beyond = histogram(values, bins=10)
    assert sum(counts) + beyond == 1000 and beyond == 5
    assert edges[-1] == 3.0  # twice the distance to the p99
    assert edges[0] == 1.0 and len(edges) == 11


def test_cv():
    assert coefficient_of_variation([10, 10, 10]) == 0
    assert coefficient_of_variation([9, 10, 11]) == pytest.approx(0.1)


def _result(name="t::app.step", board_id="unix:linux:esp32", shift=0.0, seed=1):
    rng = random.Random(seed)
    run = ProbeRun(target="app.step", board="unix#1", board_id=board_id,
                   durations_us=[float(int(rng.random() + 20.0 + shift + rng.random())) for _ in range(1000)],
                   allocs=[16] * 999 + [-4000], overhead_us=[float(int(rng.random() + 0.4)) for _ in range(1000)],
                   reference_us=[float(int(rng.random() + 10.0)) for _ in range(250)],
                   tick_us=1.0, gc="collect", warmup=10, wall_s=0.1, info={})
    return analyse(run, name)


def test_analyse_subtracts_overhead_and_reads_allocations():
    r = _result()
    assert r.overhead_us == pytest.approx(0.4, abs=0.1)
    assert r.stats.median == pytest.approx(r.raw.median - r.overhead_us)
    assert (r.alloc_median, r.alloc_max, r.gc_collections) == (16, 16, 1)
    assert len(r.blocks) == 10
    # Blocks are in units of the reference kernel (10 us here): about (20.5 - 0.4) / 10.
    assert sum(r.blocks) / 10 == pytest.approx(2.0, abs=0.1)
    assert scaled(r.stats, 10.0).median == pytest.approx(10 * r.stats.median)


def test_baseline_round_trip_regression_and_other_board(tmp_path):
    base = _result()
    save_baseline(tmp_path, "main", run_document([base], {}))
    doc = load_baseline(tmp_path, "main")
    assert json.loads((tmp_path / "baselines/main.json").read_text())["schema"] == "micropython-hil-bench/1"
    assert not compare_to_baseline(_result(seed=2), doc, "main").regressed
    slow = _result(seed=3, shift=3.0)
    assert compare_to_baseline(slow, doc, "main").regressed
    assert slow.comparison["verdict"] == "regressed"
    assert compare_to_baseline(_result(name="other::x"), doc, "main") is None
    with pytest.raises(BenchError, match=r"measured t::app.step on unix:linux:esp32, this run is on "
                                         r"serial:esp32:hardware: compare like with like"):
        compare_to_baseline(_result(board_id="serial:esp32:hardware"), doc, "main")


def test_bad_baselines_are_one_line_errors(tmp_path):
    with pytest.raises(BenchError, match="no baseline at .*save one first with --bench-save nope"):
        load_baseline(tmp_path, "nope")
    (tmp_path / "baselines").mkdir()
    (tmp_path / "baselines/junk.json").write_text("{not json")
    with pytest.raises(BenchError, match="not valid JSON"):
        load_baseline(tmp_path, "junk")
    (tmp_path / "baselines/other.json").write_text('{"schema": "something-else"}')
    with pytest.raises(BenchError, match="is not a micropython-hil-bench/1 file"):
        load_baseline(tmp_path, "other")
    with pytest.raises(BenchError, match="plain name"):
        load_baseline(tmp_path, "../x")


def test_histogram_png_is_a_valid_png_with_bars(tmp_path):
    rng = random.Random(1)
    path = histogram_png(tmp_path / "h.png", [rng.gauss(50, 5) for _ in range(500)], budget=70)
    assert read_png_size(path) == (480, 240)
    data = path.read_bytes()
    idat = data.index(b"IDAT")
    size = int.from_bytes(data[idat - 4:idat], "big")
    pixels = zlib.decompress(data[idat + 4:idat + 4 + size])
    assert len(pixels) == 240 * (1 + 480 * 3)
    assert bytes((90, 120, 200)) in pixels  # bars drawn
    assert bytes((240, 140, 0)) in pixels   # the budget line


def test_table_labels_boards_and_estimates():
    r = _result()
    lines = table([r], {})
    assert any("unix#1" in line and "t::app.step" in line for line in lines)
    assert not any("estimate" in line for line in lines)


def test_bench_result_is_the_public_type():
    assert isinstance(_result(), BenchResult)


def test_the_verdict_says_what_it_checked_and_the_chip_estimate_over_budget(tmp_path):
    from micropython_hil.bench.report import budget_verdict

    rng = random.Random(3)
    run = ProbeRun(target="app.step", board="unix#1", board_id="unix:linux:esp32",
                   durations_us=[rng.gauss(5, 0.5) for _ in range(400)], allocs=[0] * 400,
                   overhead_us=[0.5] * 400, reference_us=[], tick_us=1.0, gc="collect", warmup=0, wall_s=0.1)
    from micropython_hil.bench import Calibration
    result = analyse(run, "t::app.step", Calibration("unix#1", "unix:linux:esp32", 250000, "esp32 profile", 1000, 250.0))
    result.budget = {"budget_us": 1000, "stat": "p99", "passed": True}
    assert budget_verdict(result).startswith("measured p99 ok; esp32 profile estimate ")
    assert budget_verdict(result).endswith("OVER 1000 us budget")  # ~1400 us on the chip: reported, not judged


def test_the_histogram_marks_a_budget_beyond_its_axis_and_prints_the_tables_figures(tmp_path):
    rng = random.Random(2)
    values = [rng.gauss(20, 2) for _ in range(500)]
    stats = summarize(values)
    path = histogram_png(tmp_path / "h.png", values, budget=1000, stats=stats)
    data = path.read_bytes()
    idat = data.index(b"IDAT")
    pixels = zlib.decompress(data[idat + 4:idat + 4 + int.from_bytes(data[idat - 4:idat], "big")])
    rows = [pixels[1 + y * (1 + 480 * 3):(y + 1) * (1 + 480 * 3)] for y in range(240)]
    orange = bytes((240, 140, 0))
    budget_columns = {x for row in rows for x in range(480) if row[3 * x:3 * x + 3] == orange}
    assert budget_columns and min(budget_columns) > 460  # the arrow at the right end, not a line inside
