"""The benchmark fixtures end to end, in pytest subprocesses: budgets, the session table, the run
JSON, histogram PNGs, and a regression injected into a copy of the reference firmware caught
by --bench-compare (and a baseline from another board refused)."""

import json
import shutil
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware_under_test"

TESTS = """
import pytest

pytestmark = pytest.mark.firmware({fw!r})


@pytest.mark.hot_loop("app.Monitor.step", setup="app.Monitor(settings.load(app.DEFAULTS))",
                      prelude="import app, settings", iterations=1500, budget_us=1000)
def test_step(hot_loop, sim):
    sim.adc(36).set(1.2)
    hot_loop()


@pytest.mark.hot_loop("app.Monitor.step", setup="app.Monitor(settings.load(app.DEFAULTS))",
                      prelude="import app, settings", iterations=200, budget_us=0.01, max_alloc_bytes=8)
def test_over_budget(hot_loop):
    hot_loop()


def test_no_marker(hot_loop):
    hot_loop()
"""

# The injected regression: step() does extra arithmetic on every sample.
SLOWER = "        mv = self.adc.read_uv() // 1000\n        for _ in range(150):\n            mv = mv + 0\n"


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--bench-dir", "bench",
                                         "--bench-no-calibrate", *args, timeout=120)


def test_budget_table_json_png_and_a_regression_caught(pytester, tmp_path):
    fw_root = tmp_path / "fw"
    shutil.copytree(FIRMWARE / "industrial_monitor", fw_root / "industrial_monitor")
    shutil.copytree(FIRMWARE / "common", fw_root / "common")
    fw = fw_root / "industrial_monitor"
    pytester.makepyfile(test_loop=TESTS.format(fw=str(fw)))

    first = run(pytester, "--bench-save", "base")
    first.assert_outcomes(passed=1, failed=1, errors=1)
    out = first.stdout.str()
    assert "hot-loop benchmarks" in out and "unix#" in out
    assert "p99" in out and "> budget 0.01 us" in out
    assert "allocates up to" in out and "> budget 8" in out
    assert "the hot_loop fixture needs @pytest.mark.hot_loop" in out
    runs = list((pytester.path / "bench/runs").glob("*.json"))
    assert len(runs) == 1
    doc = json.loads(runs[0].read_text())
    assert doc["schema"] == "micropython-hil-bench/1"
    step = next(b for b in doc["benchmarks"] if b["name"].endswith("test_step::app.Monitor.step"))
    assert step["board_id"] == "unix:linux:esp32" and step["stats"]["n"] == 1500
    assert step["budget"]["passed"] is True and len(step["blocks"]) == 10
    assert Path(step["png"]).read_bytes().startswith(b"\x89PNG")
    assert (pytester.path / "bench/baselines/base.json").is_file()

    app = fw / "app.py"
    app.write_text(app.read_text().replace("        mv = self.adc.read_uv() // 1000\n", SLOWER, 1))
    slower = run(pytester, "-k", "test_step", "--bench-compare", "base")
    slower.assert_outcomes(failed=1)
    slower.stdout.fnmatch_lines(["*BenchBudgetExceeded: app.Monitor.step on unix#*: regressed against baseline base: "
                                 "median * -> * reference-kernel units (*x), difference +*: regressed*"])

    baseline = pytester.path / "bench/baselines/base.json"
    data = json.loads(baseline.read_text())
    for b in data["benchmarks"]:
        b["board_id"] = "serial:esp32:hardware"
    baseline.write_text(json.dumps(data))
    other = run(pytester, "-k", "test_step", "--bench-compare", "base")
    other.assert_outcomes(failed=1)
    other.stdout.fnmatch_lines(["*BenchError: baseline base (*base.json) measured *test_step::app.Monitor.step on "
                                "serial:esp32:hardware, this run is on unix:linux:esp32: compare like with like*"])


XDIST_TESTS = """
import pytest

pytestmark = pytest.mark.firmware({fw!r})
STEP = dict(setup="app.Monitor(settings.load(app.DEFAULTS))", prelude="import app, settings", iterations=300,
            budget_us=1000)


@pytest.mark.hot_loop("app.Monitor.step", **STEP)
def test_first(hot_loop):
    hot_loop()


@pytest.mark.hot_loop("app.Monitor.step", **STEP)
def test_second(hot_loop):
    hot_loop()
"""


def test_under_xdist_the_controller_writes_one_table_one_run_and_the_baseline_once(pytester):
    pytester.makepyfile(test_two=XDIST_TESTS.format(fw=str(FIRMWARE / "industrial_monitor")))
    result = run(pytester, "-n", "2", "-v", "--bench-save", "base")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "[gw0]" in out and "[gw1]" in out  # one test on each worker
    assert out.count("hot-loop benchmarks") == 1 and out.count("baseline base saved to") == 1
    result.stdout.fnmatch_lines(["*hot-loop benchmarks*", "benchmark * board * median * p99*", "-*",
                                 "test_two.py::test_first::app.Monitor.step * unix#1 *",
                                 "test_two.py::test_second::app.Monitor.step * unix#1 *",
                                 "times in us, *", "run saved to *", "baseline base saved to *"])
    runs = list((pytester.path / "bench/runs").glob("*.json"))
    assert len(runs) == 1, runs
    names = ["test_two.py::test_first::app.Monitor.step", "test_two.py::test_second::app.Monitor.step"]
    run_doc = json.loads(runs[0].read_text())
    assert [b["name"] for b in run_doc["benchmarks"]] == names
    assert all(b["stats"]["n"] == 300 and len(b["blocks"]) == 10 for b in run_doc["benchmarks"])
    baseline = json.loads((pytester.path / "bench/baselines/base.json").read_text())
    assert baseline["benchmarks"] == run_doc["benchmarks"]

    # Compared under xdist too: each worker reads the baseline, none writes it.
    before = (pytester.path / "bench/baselines/base.json").read_bytes()
    again = run(pytester, "-n", "2", "--bench-compare", "base")
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(["test_two.py::test_first::app.Monitor.step * vs base (*x)",
                                "test_two.py::test_second::app.Monitor.step * vs base (*x)"])
    assert (pytester.path / "bench/baselines/base.json").read_bytes() == before
    assert len(list((pytester.path / "bench/runs").glob("*.json"))) == 2
