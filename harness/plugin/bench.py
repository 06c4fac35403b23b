"""pytest side of hot-loop benchmarks: the `bench` and `hot_loop` fixtures, the hot_loop marker,
the --bench-* options, and the session's table and JSON file (logic in bench*.py).

    @pytest.mark.hot_loop("app.Monitor.step", setup="app.Monitor(settings.load(app.DEFAULTS))",
                          prelude="import app, settings", budget_us=1000, max_alloc_bytes=512)
    def test_step(hot_loop):
        hot_loop()          # deploys the test's firmware, times the function, judges it

Budgets are judged on the numbers of the board that ran (budget_stat, default p99, probe
overhead subtracted); estimates for the ESP32 profile are reported, never judged.
Options: --bench-dir DIR (default .hil-bench), --bench-save NAME, --bench-compare NAME,
--bench-no-calibrate.

Under pytest-xdist each worker measures its tests and hands its run to the controller (in its
`workeroutput`, which xdist delivers with `pytest_testnodedown`); only the controller writes:
one run file, the baseline once, one table.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ..errors import BenchBudgetExceeded, BenchError
from ..bench import BenchResult, Calibration, analyse, board_id, calibrate, latency, probe
from ..bench.report import (budget_verdict, calibrations_of, compare_to_baseline, histogram_png, load_baseline,
                           merge_runs, results_of, run_document, save_baseline, table, write_run)
from .options import options

MARKERS = [
    "hot_loop(target, budget_us=None, budget_stat='p99', max_alloc_bytes=None, setup=None, prelude=None, "
    "**probe options): time a firmware function on the board with the hot_loop fixture",
]
_SESSION = pytest.StashKey["BenchSession"]()
_WORKER_OUTPUT = "micropython_hil_bench"  # a worker's run, in its workeroutput


def configure(config: pytest.Config) -> None:
    """Register the session hooks (table, JSON); safe to call twice."""
    if not config.pluginmanager.has_plugin("micropython-hil-bench"):
        config.pluginmanager.register(_Hooks(config), "micropython-hil-bench")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class BenchSession:
    """The session's benchmarks: results, calibrations per board, the baseline compared against."""

    def __init__(self, config: pytest.Config) -> None:
        opts = options(config)
        self.folder = opts.bench_dir
        self.save_name = opts.bench_save
        self.compare_name = opts.bench_compare
        self.calibrate = opts.bench_calibrate
        self.results: list[BenchResult] = []
        self.calibrations: dict[str, Calibration] = {}
        self.calibration_errors: dict[str, str] = {}
        self.worker_runs: list[dict] = []  # the controller's, under xdist: each worker's run document
        self._baseline: dict | None = None
        self.run_file: Path | None = None
        self.baseline_file: Path | None = None

    @property
    def baseline(self) -> dict | None:
        if self.compare_name and self._baseline is None:
            self._baseline = load_baseline(self.folder, self.compare_name)
        return self._baseline

    def calibration_for(self, board: Any, board_key: str) -> Calibration | None:
        """Pystone calibration of a simulated board (the unix port), once per profile."""
        if not self.calibrate or getattr(board, "sim", None) is None:
            return None
        if board_key not in self.calibrations and board_key not in self.calibration_errors:
            try:
                self.calibrations[board_key] = calibrate(board)
            except BenchError as e:
                self.calibration_errors[board_key] = str(e).splitlines()[0]
        return self.calibrations.get(board_key)


def session_of(config: pytest.Config) -> BenchSession:
    if _SESSION not in config.stash:
        configure(config)
        config.stash[_SESSION] = BenchSession(config)
    return config.stash[_SESSION]


class Bench:
    """Benchmarks of one test on its board: measure() a function, latency() end to end."""

    def __init__(self, board: Any, session: BenchSession, test_id: str, artifacts: Path | None,
                 properties: list | None = None) -> None:
        self.board, self.session, self.test_id, self.artifacts = board, session, test_id, artifacts
        self.properties = properties if properties is not None else []  # the test's --junitxml properties

    def measure(self, target: str, *, name: str | None = None, budget_us: float | None = None,
                budget_stat: str = "p99", max_alloc_bytes: int | None = None, **options: Any) -> BenchResult:
        """Time `target` on the board (options: setup, prelude, iterations, duration_s, warmup,
        gc, clock, alloc; see micropython_hil.bench.probe), record it, and fail the test over budget or on a
        regression against --bench-compare."""
        # Calibrate first: before the firmware's imports fragment the board's heap.
        cal = self.session.calibration_for(self.board, board_id(self.board, "linux"))
        run = probe(self.board, target, **options)
        result = analyse(run, f"{self.test_id}::{name or target}", cal)
        return self._judge(result, budget_us, budget_stat, max_alloc_bytes)

    def latency(self, stimulus: Callable[[int], None], telemetry: Any, topic: str, *,
                name: str = "latency", budget_us: float | None = None, budget_stat: str = "p99",
                **options: Any) -> BenchResult:
        """End-to-end latency (see bench.latency), recorded and judged like measure()."""
        result = latency(stimulus, telemetry, topic, board=self.board, name=f"{self.test_id}::{name}", **options)
        return self._judge(result, budget_us, budget_stat, None)

    def _judge(self, result: BenchResult, budget_us: float | None, budget_stat: str,
               max_alloc_bytes: int | None) -> BenchResult:
        failures = []
        if budget_us is not None or max_alloc_bytes is not None:
            result.budget = {"budget_us": budget_us, "stat": budget_stat, "max_alloc_bytes": max_alloc_bytes}
            if budget_us is not None and result.stats.get(budget_stat) > budget_us:
                failures.append(f"{budget_stat} {result.stats.get(budget_stat):.2f} us > budget {budget_us:g} us")
            if max_alloc_bytes is not None and result.alloc_max > max_alloc_bytes:
                failures.append(f"allocates up to {result.alloc_max} bytes per call > budget {max_alloc_bytes}")
            result.budget["passed"] = not failures
        if self.artifacts is not None and result.durations_us:
            safe = re.sub(r"[^\w.-]+", "_", result.name.rpartition("::")[2]).strip("_")
            png = histogram_png(self.artifacts / f"bench-{safe}.png", result.durations_us, budget=budget_us,
                                stats=result.stats)
            result.info["png"] = str(png)
        self.session.results.append(result)
        short = result.name.rpartition("::")[2]
        self.properties += [(f"bench {short} median_us", round(result.stats.median, 3)),
                            (f"bench {short} p99_us", round(result.stats.p99, 3)),
                            (f"bench {short} board", result.board)]
        if result.kind == "hot_loop":
            self.properties.append((f"bench {short} alloc_max_bytes", result.alloc_max))
        if result.budget:
            self.properties.append((f"bench {short} verdict", budget_verdict(result)))
        baseline = self.session.baseline
        if baseline is not None:
            cmp = compare_to_baseline(result, baseline, self.session.compare_name or "")
            if cmp is not None and cmp.regressed:
                unit = "reference-kernel units" if result.kind == "hot_loop" else "us"
                failures.append(f"regressed against baseline {self.session.compare_name}: {cmp.describe(unit)}")
        if failures:
            raise BenchBudgetExceeded(f"{result.target} on {result.board}: " + "; ".join(failures))
        return result


@pytest.fixture
def bench(request: pytest.FixtureRequest, board: Any, hil_artifacts: Path) -> Bench:
    """Benchmarks on this test's board: bench.measure("app.step", ...), bench.latency(...)."""
    return Bench(board, session_of(request.config), request.node.nodeid, hil_artifacts, request.node.user_properties)


@pytest.fixture
def hot_loop(request: pytest.FixtureRequest, bench: Bench) -> Iterator[Callable[..., BenchResult]]:
    """Runs the test's @pytest.mark.hot_loop: deploys the test's firmware (unless deploy=False),
    times the target, fails the test over budget or on a regression. Keyword overrides win."""
    marker = request.node.get_closest_marker("hot_loop")
    if marker is None or not marker.args:  # a marker without its target
        pytest.fail(f"{request.node.nodeid}: the hot_loop fixture needs "
                    "@pytest.mark.hot_loop('module.function', budget_us=...)", pytrace=False)

    def run(**overrides: Any) -> BenchResult:
        options = {**marker.kwargs, **overrides}
        if options.pop("deploy", True) and _has_firmware(request):
            request.getfixturevalue("firmware").deploy(bench.board)
        return bench.measure(marker.args[0], **options)

    yield run


def _has_firmware(request: pytest.FixtureRequest) -> bool:
    return bool(request.node.get_closest_marker("firmware") or options(request.config).firmware)


class _Hooks:
    """Session-end output: the run's JSON file, the baseline, and the terminal table."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """An xdist worker ended (on the controller): keep the run it measured, if any."""
        part = (getattr(node, "workeroutput", None) or {}).get(_WORKER_OUTPUT)
        if part:
            bs = session_of(self.config)
            bs.worker_runs.append(part["run"])
            bs.calibration_errors.update(part["calibration_errors"])

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        bs = config.stash.get(_SESSION, None)
        if bs is None:
            return
        if _is_worker(config):
            # Not a file: the controller gathers every worker's run, and writes once.
            if bs.results:
                config.workeroutput[_WORKER_OUTPUT] = {"run": run_document(bs.results, bs.calibrations),
                                                       "calibration_errors": bs.calibration_errors}
            return
        if bs.worker_runs:
            doc = merge_runs([run_document(bs.results, bs.calibrations), *bs.worker_runs])
            bs.results, bs.calibrations = results_of(doc), calibrations_of(doc)  # for the table
        elif bs.results:
            doc = run_document(bs.results, bs.calibrations)
        else:
            return
        bs.run_file = write_run(bs.folder, doc)
        if bs.save_name:
            bs.baseline_file = save_baseline(bs.folder, bs.save_name, doc)

    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        bs = config.stash.get(_SESSION, None)
        if bs is None or not bs.results:
            return
        tr = terminalreporter
        tr.section("hot-loop benchmarks")
        for line in table(bs.results, bs.calibrations):
            tr.write_line(line)
        for key, why in bs.calibration_errors.items():
            tr.write_line(f"no ESP32 estimate for {key}: {why}")
        if bs.run_file:
            tr.write_line(f"run saved to {bs.run_file}")
        if bs.baseline_file:
            tr.write_line(f"baseline {bs.save_name} saved to {bs.baseline_file}")
