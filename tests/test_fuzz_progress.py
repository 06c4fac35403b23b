"""What a fuzz run shows while it runs and after: progress lines (printed, or logged at INFO) and
hypothesis's statistics under --hypothesis-show-statistics; the end-to-end cases are real fuzz
runs on a simulated board in pytest subprocesses."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import strategies as st

from micropython_hil.fuzz.progress import Progress, take_statistics
from micropython_hil.fuzz.runner import run_property

HOME = Path(__file__).resolve().parent.parent / "firmware_under_test" / "home_automation"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_progress(clock: FakeClock) -> None:
    p = Progress("fuzz fw on unix#9", "payloads", every_s=5.0, clock=clock)
    p.start("up to 4 examples")
    clock.now += 2
    p.example(10, "passing")            # 2 s in: no line yet
    clock.now += 4
    p.example(6, "failing", resets=1)   # 6 s in: a line
    clock.now += 1
    p.example(0, "invalid")
    clock.now += 1
    p.finish(ValueError("x"))


def test_progress_prints_where_nothing_listens_at_info(capsys):
    run_progress(FakeClock())
    assert capsys.readouterr().out.splitlines() == [
        "fuzz fw on unix#9: up to 4 examples",
        "fuzz fw on unix#9: 2 test cases (0.3/s): 1 passing, 1 failing, 0 invalid; 16 payloads (3/s), "
        "1 board reset; 6.0 s",
        "fuzz fw on unix#9: failed (ValueError), 3 test cases (0.4/s): 1 passing, 1 failing, 1 invalid; "
        "16 payloads (2/s), 1 board reset; 8.0 s",
    ]


def test_progress_is_logged_at_info_when_someone_listens(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="micropython_hil.fuzz"):
        run_progress(FakeClock())
    assert [r.getMessage().split(":")[1].strip() for r in caplog.records] == [
        "up to 4 examples", "2 test cases (0.3/s)", "failed (ValueError), 3 test cases (0.4/s)"]
    assert capsys.readouterr().out == ""


def test_a_runs_statistics_are_delivered_even_when_it_fails():
    take_statistics()

    def prop(data):
        assert data.draw(__import__("hypothesis").strategies.integers(0, 9)) < 5

    with pytest.raises(AssertionError):
        run_property(prop, examples=30, seed=3, database=None, key="t", what="fuzz t")
    (what, text), = take_statistics()
    assert what == "fuzz t"
    assert "during generate phase" in text and "Found 1 distinct error in this phase" in text
    assert "during shrink phase" in text and take_statistics() == []


FUZZ_TESTS = """
import pytest
from hypothesis import strategies as st
from micropython_hil.fuzz import Differential


@pytest.mark.firmware({home!r})
def test_fuzz(fuzzer):
    fuzzer.progress_every = 0  # a line after every test case
    # Raw bytes: drawn at once (the schema's valid messages can take seconds to draw on a cold start).
    fuzzer.run(examples=6, seed=1, strategy=st.binary(max_size=64))


def test_diff(fuzz_board):
    Differential(fuzz_board, function="lambda b: len(b)", reference=len).run(
        st.binary(max_size=16), examples=8, seed=2, progress_every=60)
"""


def run(pytester, *args):
    pytester.makepyfile(test_fz=FUZZ_TESTS.format(home=str(HOME)))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fuzz-database", "db", *args, timeout=120)


def test_fuzz_runs_print_progress_with_s_and_their_statistics(pytester):
    result = run(pytester, "-s", "--hypothesis-show-statistics")
    result.assert_outcomes(passed=2)
    out = result.stdout.lines
    stats_at = next(i for i, line in enumerate(out) if "Hypothesis Statistics" in line)
    # With -s a line may follow pytest's own "test_fz.py " on the same line.
    fuzz = [line for line in out[:stats_at] if "fuzz home_automation on unix#" in line]
    assert fuzz[0].endswith(": up to 6 examples of 1..32 payloads, seed 1"), fuzz
    # One line per test case (progress_every=0), then the totals.
    assert len(fuzz) >= 1 + 6 + 1 and ": done, " in fuzz[-1], fuzz
    result.stdout.fnmatch_lines(["*fuzz home_automation on unix#*: * test cases (*/s): * passing, 0 failing, "
                                 "* invalid; * payloads (*/s); *s"])
    diff = [line for line in out[:stats_at] if "differential lambda b: len(b) on unix#" in line]
    assert len(diff) == 2 and "seed 2" in diff[0] and ": done, 8 test cases" in diff[1], diff

    text = "\n".join(out[stats_at:])
    assert "test_fz.py::test_fuzz:" in text and "test_fz.py::test_diff:" in text, text
    result.stdout.fnmatch_lines(["*Hypothesis Statistics*", "test_fz.py::test_*:", "  * on unix#*:",
                                 "    - during generate phase (* seconds):",
                                 "      - Typical runtimes: *", "      - * passing, 0 failing, and * invalid test cases"])
    assert "Stopped because settings.max_examples=6" in text and "Stopped because settings.max_examples=8" in text


@pytest.mark.firmware(str(HOME))
def test_a_fuzz_run_logs_its_progress_at_info(fuzzer, caplog):
    """What --log-cli-level=INFO shows live: the records on micropython_hil.fuzz."""
    fuzzer.progress_every = 0
    with caplog.at_level(logging.INFO, logger="micropython_hil.fuzz"):
        fuzzer.run(examples=4, seed=5, strategy=st.binary(max_size=32))
    lines = [r.getMessage() for r in caplog.records if r.name == "micropython_hil.fuzz"]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "micropython_hil.fuzz")
    assert lines[0].endswith(": up to 4 examples of 1..32 payloads, seed 5") and len(lines) >= 1 + 4 + 1, lines
    assert lines[-1].startswith(f"fuzz home_automation on {fuzzer.board.name}: done, ") and "0 failing" in lines[-1]
    assert take_statistics()[0][0] == f"fuzz home_automation on {fuzzer.board.name}"
