"""One child pytest run: the tests that deploy a firmware, against a copy of it.

The child is `python -m pytest USER_ARGS --firmware COPY --hil-mutant-of ORIGINAL
--hil-mutant-report FILE [--hil-mutant-tests FILE] -x`: the plugin (plugin/mutate.py) keeps only
the tests whose `@pytest.mark.firmware` names ORIGINAL (or that name none), runs them in the order
given, and writes a JSON line per test. `--firmware` points those tests at the copy. The child
is started through a Tether, so it dies with the harness, and killed by its pid on a timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import HarnessError
from ..tether import Tether

# pytest's exit codes: 0 all passed, 1 some failed; anything else means the run itself broke.
EXIT_OK, EXIT_FAILED = 0, 1


@dataclass
class TestOutcome:
    """One test's result in a child run."""

    nodeid: str
    outcome: str          # passed | failed | skipped
    seconds: float
    message: str = ""     # the failure's first line


@dataclass
class TestRun:
    """What a child run did: the tests selected, each outcome, how it ended."""

    selected: list[str] = field(default_factory=list)      # node ids, in run order
    test_files: dict[str, str] = field(default_factory=dict)  # node id -> its file
    conftests: list[str] = field(default_factory=list)
    outcomes: list[TestOutcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)        # collection errors
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    output: str = ""

    @property
    def first_failure(self) -> TestOutcome | None:
        return next((o for o in self.outcomes if o.outcome == "failed"), None)

    @property
    def broken(self) -> str | None:
        """Why the run itself failed (not a test), or None."""
        if self.timed_out:
            return None
        if self.errors:
            return "collection failed: " + self.errors[0]
        if self.returncode not in (EXIT_OK, EXIT_FAILED):
            tail = "\n".join(self.output.strip().splitlines()[-15:])
            return f"pytest exited with status {self.returncode}:\n{tail}"
        if self.returncode == EXIT_FAILED and self.first_failure is None:
            tail = "\n".join(self.output.strip().splitlines()[-15:])
            return f"pytest reported a failure outside any test:\n{tail}"
        return None


def run_tests(tether: Tether, pytest_args: Sequence[str], firmware_copy: Path, original: Path, cwd: Path,
              workdir: Path, tests: Sequence[str] | None = None, test_files: Sequence[str] = (),
              timeout: float | None = None, exitfirst: bool = True, live: set | None = None) -> TestRun:
    """Run the tests that deploy `original` against `firmware_copy` in a child pytest.

    `tests`: node ids to run, in this order (default: every test that deploys the firmware);
    `test_files`: their files (collection skips the others). `workdir` takes the child's report,
    output and artifacts. `live`: a set holding the child while it runs (so a caller that is
    interrupted can kill it by its pid)."""
    report = workdir / "tests.jsonl"
    # --option=value: a path given as a separate argument would count towards pytest's rootdir
    # (without an ini file), and the tests' firmware markers are relative to the rootdir.
    argv = [sys.executable, "-m", "pytest", *pytest_args, f"--firmware={firmware_copy}",
            f"--hil-mutant-of={original}", f"--hil-mutant-report={report}",
            f"--hil-artifacts={workdir / 'artifacts'}", "-p", "no:cacheprovider", "-q"]
    if exitfirst:
        argv.append("-x")
    if tests is not None:
        order = workdir / "tests.json"
        order.write_text(json.dumps({"tests": list(tests), "files": list(test_files)}))
        argv.append(f"--hil-mutant-tests={order}")
    log = workdir / "pytest.log"
    began = time.monotonic()
    result = TestRun()
    with open(log, "wb") as out:
        try:
            proc = tether.popen(argv, cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        except OSError as e:
            raise HarnessError(f"cannot start pytest ({sys.executable}): {e}") from None
        if live is not None:
            live.add(proc)
        try:
            result.returncode = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            result.timed_out = True
            proc.kill()
            proc.wait()
        except BaseException:  # Ctrl-C, SIGTERM: the child goes with us
            proc.kill()
            proc.wait()
            raise
        finally:
            if live is not None:
                live.discard(proc)
    result.seconds = time.monotonic() - began
    result.output = log.read_text(errors="replace")[-20000:]
    _read_report(report, result)
    return result


def _read_report(path: Path, result: TestRun) -> None:
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        kind = event.get("event")
        if kind == "selected":
            result.selected = event["tests"]
            result.test_files = event["files"]
            result.conftests = event["conftests"]
        elif kind == "test":
            result.outcomes.append(TestOutcome(event["nodeid"], event["outcome"], event["seconds"],
                                               event.get("message", "")))
        elif kind == "collect-error":
            result.errors.append(event["message"])
