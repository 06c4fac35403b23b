"""Mutation testing from pytest: `--hil-mutate DIRS`, and the side of `hil mutate`'s child runs.

    pytest scenarios -m "not fuzz" --hil-mutate firmware_under_test/weather_station

measures the selected tests instead of running them: the same campaign as `hil mutate DIRS --
ARGS` (micropython_hil.mutate), with this command line (less the --hil-mutate options) as the
child runs' pytest arguments. The exit status is 1 when the score is below --hil-mutate-min-score.

In a child run (--hil-mutant-of ORIGINAL, set by the campaign), a plugin object keeps only the tests
that deploy ORIGINAL (their @pytest.mark.firmware names it), runs them in the order
--hil-mutant-tests gives, skips collecting other test files, and writes one JSON line per test to
--hil-mutant-report: what the campaign reads back.

One hook, pytest_cmdline_main, is re-exported by the plugin's __init__: it runs before the session
is configured, so it can run the campaign in place of the session or register the child plugin.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

import pytest

from ..errors import HarnessError
from .options import HilOptions, options

_FLAGS_WITH_VALUES = ("--hil-mutate", "--hil-mutate-workers", "--hil-mutate-budget", "--hil-mutate-min-score")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    opts = options(config)
    if opts.mutant_of is not None or opts.mutant_report is not None:
        config.pluginmanager.register(MutantChildRun(config, opts), "micropython_hil-mutant-child")
        return None  # the session runs, selected and reported by the child plugin
    if opts.mutate:
        return run_campaign(config, opts)
    return None


def run_campaign(config: pytest.Config, opts: HilOptions, out: TextIO | None = None) -> int:
    """Run the mutation campaign this command line asks for; the exit status."""
    from ..mutate import Campaign  # the campaign's modules load only when asked for

    out = out or sys.stdout
    args = child_args(list(config.invocation_params.args))

    def progress(line: str) -> None:
        print(line, file=out, flush=True)

    try:
        campaign = Campaign(list(opts.mutate), args, workers=opts.mutate_workers or None,
                            budget_s=opts.mutate_budget, cwd=config.invocation_params.dir, progress=progress)
        report = campaign.run()
    except HarnessError as e:
        print(f"hil mutate: {e}", file=sys.stderr)
        return pytest.ExitCode.USAGE_ERROR
    print(report.text(), file=out, flush=True)
    if report.score < opts.mutate_min_score:
        print(f"mutation score {report.score:.1f}% is below --hil-mutate-min-score {opts.mutate_min_score:g}",
              file=out)
        return pytest.ExitCode.TESTS_FAILED
    return pytest.ExitCode.OK


def child_args(args: list[str]) -> list[str]:
    """The command line without the --hil-mutate options: what each child pytest is given."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in _FLAGS_WITH_VALUES:
            skip = True
        elif not arg.startswith(tuple(f + "=" for f in _FLAGS_WITH_VALUES)):
            out.append(arg)
    return out


class MutantChildRun:
    """The plugin of a child run: selects, orders and reports the tests (see the module doc)."""

    def __init__(self, config: pytest.Config, opts: HilOptions):
        self.config = config
        self.original = opts.mutant_of.resolve() if opts.mutant_of is not None else None
        self.order: list[str] | None = None
        self.files: set[str] | None = None
        if opts.mutant_tests is not None:
            try:
                doc = json.loads(opts.mutant_tests.read_text())
            except (OSError, ValueError) as e:
                raise pytest.UsageError(f"--hil-mutant-tests {opts.mutant_tests}: {e}") from None
            self.order = list(doc.get("tests", []))
            self.files = {str(Path(f).resolve()) for f in doc.get("files", [])} or None
        self.report: TextIO | None = open(opts.mutant_report, "a") if opts.mutant_report is not None else None
        self.phases: dict[str, dict[str, Any]] = {}

    def write(self, event: dict[str, Any]) -> None:
        if self.report is not None:
            self.report.write(json.dumps(event) + "\n")
            self.report.flush()

    def deploys_original(self, item: pytest.Item) -> bool:
        """The test's @pytest.mark.firmware names the original. A test without the marker is left
        out: it may deploy a firmware of its own (start_firmware(firmware=...)), and --firmware,
        which the campaign sets to the copy, would otherwise decide for the rest."""
        if self.original is None:
            return True
        marker = item.get_closest_marker("firmware")
        if marker is None or not marker.args:
            return False
        path = Path(str(marker.args[0]))
        if not path.is_absolute():
            path = Path(self.config.rootpath) / path
        return path.resolve() == self.original

    def pytest_ignore_collect(self, collection_path: Path) -> bool | None:
        if self.files is None or collection_path.suffix != ".py":
            return None
        if collection_path.name in ("conftest.py", "__init__.py"):
            return None
        return str(collection_path.resolve()) not in self.files or None

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        keep = [item for item in items if self.deploys_original(item)]
        if self.order is not None:
            rank = {nodeid: i for i, nodeid in enumerate(self.order)}
            keep = sorted((item for item in keep if item.nodeid in rank), key=lambda item: rank[item.nodeid])
        dropped = [item for item in items if item not in keep]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep
        conftests = sorted({str(Path(p.__file__).resolve()) for p in config.pluginmanager.get_plugins()
                            if getattr(p, "__file__", "") and Path(p.__file__).name == "conftest.py"})
        self.write({"event": "selected", "tests": [item.nodeid for item in keep],
                    "files": {item.nodeid: str(Path(item.path).resolve()) for item in keep},
                    "conftests": conftests})

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.write({"event": "collect-error", "message": f"{report.nodeid}: {_first_line(report)}"})

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        phase = self.phases.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0, "message": ""})
        phase["seconds"] += report.duration
        if report.failed and phase["outcome"] != "failed":
            phase["outcome"], phase["message"] = "failed", f"{report.when}: {_first_line(report)}"
        elif report.skipped and phase["outcome"] == "passed":
            phase["outcome"] = "skipped"
        if report.when == "teardown":
            self.write({"event": "test", "nodeid": report.nodeid, "outcome": phase["outcome"],
                        "seconds": round(phase["seconds"], 3), "message": phase["message"]})

    def pytest_unconfigure(self) -> None:
        if self.report is not None:
            self.report.close()
            self.report = None


def _first_line(report: Any) -> str:
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    text = getattr(crash, "message", None) or str(getattr(report, "longrepr", "") or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else "")[:300]
