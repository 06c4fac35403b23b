"""Mutation campaigns end to end, on a tiny firmware and a tiny scenario in tmp_path: a planted
mutant is killed by the scenario, a survivor is reported as a diff, the cache skips reruns, an
equivalent mark takes a mutant out of the score, and `--hil-mutate` runs the same from pytest."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from micropython_hil.errors import HarnessError
from micropython_hil.mutate import EQUIVALENT, KILLED, NOT_RUN, SURVIVED, Campaign, ResultCache, TIMEOUT
from micropython_hil.mutate.cli import add_arguments, split_target
from micropython_hil.plugin.mutate import child_args

# Three mutants: `>` -> `>=` in main.py and LIMIT x1000 in the shared file are killed (over(3)
# turns True, over(5) turns False); LIMIT 3 -> 4 survives (the scenario never tries over(4)).
OPERATORS = {"boundary", "constant"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A firmware that includes shared code from a sibling folder, and one scenario deploying it."""
    (tmp_path / "fw" / "blink").mkdir(parents=True)
    (tmp_path / "fw" / "shared").mkdir()
    (tmp_path / "fw" / "blink" / "main.py").write_text(textwrap.dedent("""\
        import limits

        def over(x):
            return x > limits.LIMIT

        print("over", over(5), over(3))
        """))
    (tmp_path / "fw" / "blink" / "manifest.json").write_text('{"include": ["../shared"]}')
    (tmp_path / "fw" / "shared" / "limits.py").write_text("LIMIT = 3\n")
    (tmp_path / "test_blink.py").write_text(textwrap.dedent("""\
        import pytest

        @pytest.mark.firmware("fw/blink")
        def test_over_the_limit(board, firmware):
            firmware.deploy(board)
            board.run("main.py")
            board.console.expect(r"over True False", timeout=10)

        @pytest.mark.firmware("fw/other")
        def test_another_firmware():
            raise AssertionError("never selected: it deploys another firmware")

        def test_no_firmware():
            raise AssertionError("never selected: it deploys nothing")
        """))
    return tmp_path


def campaign(project: Path, **kw) -> Campaign:
    kw.setdefault("cache", project / "cache.json")
    return Campaign(["fw/blink"], ["test_blink.py"], workers=2, operators=OPERATORS, cwd=project, **kw)


def test_a_campaign_kills_the_planted_mutants_and_reports_the_survivor_as_a_diff(project):
    report = campaign(project).run()
    by_status = {r.status: [] for r in report.results}
    for r in report.results:
        by_status[r.status].append(r)
    assert len(report.results) == 3 and report.killed == 2 and report.survived == 1
    assert report.score == pytest.approx(200 / 3)
    for r in by_status[KILLED]:
        assert r.killer == "test_blink.py::test_over_the_limit" and r.seconds > 0 and not r.cached
    assert {r.mutant.path for r in by_status[KILLED]} == {"main.py", "../shared/limits.py"}  # the include too
    survivor = by_status[SURVIVED][0]
    assert survivor.mutant.path == "../shared/limits.py" and "-LIMIT = 3\n+LIMIT = 4" in survivor.diff
    text = report.text()
    assert "+LIMIT = 4" in text and survivor.mutant.id in text and "mutation score 66.7%" in text
    assert "2  test_blink.py::test_over_the_limit" in text  # which test killed how many
    doc = report.to_json()
    assert doc["killed"] == 2 and doc["survived"] == 1 and len(doc["results"]) == 3
    assert (project / "fw" / "shared" / "limits.py").read_text() == "LIMIT = 3\n"  # the original untouched

    # The same campaign again: every result comes from the cache, no mutant runs.
    again = campaign(project).run()
    assert all(r.cached for r in again.results) and again.run_here == []
    assert [(r.mutant.id, r.status) for r in again.results] == [(r.mutant.id, r.status) for r in report.results]

    # The scenario strengthened (it now tries over(4)): the survivor dies. The kills run again
    # too, since their killer's file changed: a result is only reused for the same tests.
    (project / "test_blink.py").write_text(textwrap.dedent("""\
        import pytest

        @pytest.mark.firmware("fw/blink")
        def test_over_the_limit(board, firmware):
            firmware.deploy(board)
            assert "over True False" in board.exec("import main")
            assert board.eval("main.over(4)") is True
        """))
    stronger = campaign(project).run()
    assert stronger.survived == 0 and stronger.killed == 3 and len(stronger.run_here) == 3


def test_an_equivalent_mark_takes_the_mutant_out_of_the_score_and_stale_marks_are_named(project):
    planned = campaign(project, cache=None).plan()
    survivor_id = next(p.mutant.id for p in planned if p.mutant.replacement == "4")
    (project / "fw" / "blink" / "mutants.equivalent.json").write_text(json.dumps({
        survivor_id: "LIMIT 4 instead of 3: no input between them is ever measured (for this test)",
        "main.py:over:boundary:00000000": "a mark for a mutant that no longer exists"}))
    report = campaign(project).run()
    marked = [r for r in report.results if r.status == EQUIVALENT]
    assert [r.mutant.id for r in marked] == [survivor_id] and "no input between them" in marked[0].reason
    assert report.survived == 0 and report.killed == 2 and report.score == 100.0
    assert report.stale_marks == ["blink: main.py:over:boundary:00000000"]
    assert "stale" in report.text()


def test_the_time_budget_leaves_mutants_not_run_and_not_counted(project):
    report = campaign(project, cache=None, budget_s=0.001).run()
    assert {r.status for r in report.results} == {NOT_RUN} and report.killed + report.survived == 0
    assert "3 not run (budget)" in report.summary()


def test_tests_failing_on_the_unmutated_firmware_stop_the_campaign(project):
    main = project / "fw" / "blink" / "main.py"
    main.write_text(main.read_text().replace("over(5), over(3)", "over(3), over(5)"))
    with pytest.raises(HarnessError, match="test_over_the_limit fails on the unmutated firmware"):
        campaign(project, cache=None).run()
    with pytest.raises(HarnessError, match="no selected test deploys this firmware"):
        Campaign(["fw/blink"], ["test_blink.py", "-k", "nothing_matches"], operators=OPERATORS, cwd=project,
                 cache=None).run()


def test_the_cache_reuses_a_kill_while_its_test_file_is_unchanged_and_a_survivor_only_for_the_same_suite(tmp_path):
    cache = ResultCache(tmp_path / "c.json")
    cache.store("k1", {"status": KILLED, "killer": "t.py::a", "suite": "s1", "killer_digest": "d1"})
    cache.store("k2", {"status": SURVIVED, "killer": None, "suite": "s1", "killer_digest": None})
    cache.store("k3", {"status": TIMEOUT, "killer": "t.py::a", "suite": "s1", "killer_digest": "d1"})
    reread = ResultCache(tmp_path / "c.json")
    assert len(reread) == 3
    assert reread.lookup("k1", "s1", lambda n: None)["status"] == KILLED
    assert reread.lookup("k1", "s2", lambda n: "d1")["status"] == KILLED      # another suite, same killer
    assert reread.lookup("k1", "s2", lambda n: "d2") is None                  # its killer's file changed
    assert reread.lookup("k2", "s2", lambda n: "d1") is None                  # a survivor meets new tests
    assert reread.lookup("k3", "s2", lambda n: "d1") is None                  # a timeout too
    assert reread.lookup("nope", "s1", lambda n: "d1") is None
    (tmp_path / "c.json").write_text("{broken")
    assert len(ResultCache(tmp_path / "c.json")) == 0  # a broken cache starts afresh


def test_the_command_line_takes_options_before_and_after_the_firmware_folders():
    parser = argparse.ArgumentParser(prog="hil")
    add_arguments(parser.add_subparsers().add_parser("mutate"))

    args = parser.parse_args(["mutate", "--workers", "3", "fw/a", "fw/b", "--budget", "60", "--",
                              "scenarios", "-m", "not fuzz", "--workers", "9"])
    firmwares, pytest_args = split_target(args)
    assert firmwares == ["fw/a", "fw/b"] and args.workers == 3 and args.budget == 60
    assert pytest_args == ["scenarios", "-m", "not fuzz", "--workers", "9"]
    assert child_args(["scenarios", "--hil-mutate", "fw/a", "-x", "--hil-mutate-workers=2",
                       "--hil-mutate-budget", "9", "-m", "not fuzz"]) == ["scenarios", "-x", "-m", "not fuzz"]


def test_pytest_hil_mutate_runs_the_campaign_instead_of_the_tests(project):
    result = subprocess.run([sys.executable, "-m", "pytest", "test_blink.py", "-p", "no:cacheprovider",
                             "--hil-mutate", "fw/blink", "--hil-mutate-min-score", "90"],
                            cwd=project, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr  # 75% < 90%
    # Every operator here: `return x > limits.LIMIT` removed is a fourth mutant, killed.
    assert "mutation score 75.0%" in result.stdout and "+LIMIT = 4" in result.stdout
    assert "below --hil-mutate-min-score 90" in result.stdout


def test_only_files_the_firmware_imports_are_mutated(tmp_path):
    from micropython_hil.mutate import FirmwareTree

    (tmp_path / "fw" / "lib").mkdir(parents=True)
    (tmp_path / "shared" / "pkg").mkdir(parents=True)
    (tmp_path / "fw" / "main.py").write_text("import app\napp.run()\n")
    (tmp_path / "fw" / "app.py").write_text("from pkg import part\nimport driver\n\ndef run():\n    import late\n")
    (tmp_path / "fw" / "lib" / "driver.py").write_text("X = 1\n")
    (tmp_path / "fw" / "unused.py").write_text("Y = 2\n")
    (tmp_path / "fw" / "manifest.json").write_text('{"include": ["../shared"]}')
    (tmp_path / "shared" / "late.py").write_text("Z = 3\n")
    (tmp_path / "shared" / "other_firmware.py").write_text("W = 4\n")
    (tmp_path / "shared" / "pkg" / "__init__.py").write_text("")
    (tmp_path / "shared" / "pkg" / "part.py").write_text("from . import helper\n")
    (tmp_path / "shared" / "pkg" / "helper.py").write_text("V = 5\n")
    assert list(FirmwareTree(tmp_path / "fw").sources()) == [
        "../shared/late.py", "../shared/pkg/__init__.py", "../shared/pkg/helper.py", "../shared/pkg/part.py",
        "app.py", "lib/driver.py", "main.py"]
    assert list(FirmwareTree(tmp_path / "fw", exclude=("../shared/*",)).sources()) == ["app.py", "lib/driver.py",
                                                                                      "main.py"]
