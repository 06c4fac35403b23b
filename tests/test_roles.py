"""Several boards in one test, by role: --board ROLE=SPEC, the boards fixture, its skips,
consoles and artifacts."""

from pathlib import Path

import pytest

from micropython_hil.errors import HarnessError
from micropython_hil.fleet.assign import BoardAssignment, split_role

REPO = Path(__file__).resolve().parents[1]


def run_pytest(pytester, *args, timeout=180):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)


def test_board_values_assign_roles_and_keep_urls_whole():
    assert split_role("relay=serial:/dev/ttyUSB0") == ("relay", "serial:/dev/ttyUSB0")
    assert split_role("serial:rfc2217://lab:2217?logging=debug") == (None, "serial:rfc2217://lab:2217?logging=debug")
    both = BoardAssignment.parse(["unix:esp32s3", "relay=serial:/dev/ttyUSB0", "switch=unix"])
    assert str(both.default) == "unix:esp32s3"
    assert str(both.spec_for("relay")) == "serial:/dev/ttyUSB0" and str(both.spec_for("switch")) == "unix"
    assert str(both.spec_for("station")) == "unix:esp32s3"  # not named: simulated like the run's board
    # Later values win: the command line's role over the ini file's.
    assert str(BoardAssignment.parse(["relay=serial:/dev/ttyUSB0", "relay=unix"]).spec_for("relay")) == "unix"


def test_on_a_bench_a_role_without_a_board_is_absent_and_says_how_to_give_it_one():
    bench = BoardAssignment.parse(["serial:/dev/ttyUSB0", "relay=serial:/dev/ttyUSB1"])
    assert str(bench.spec_for("relay")) == "serial:/dev/ttyUSB1"
    assert bench.spec_for("switch") is None
    assert bench.why_absent("switch") == ("role 'switch' has no board on this bench (--board serial:/dev/ttyUSB0): "
                                          "give it one with --board switch=serial:PORT, or simulate it with "
                                          "--board switch=unix")


@pytest.mark.parametrize("values, error", [
    (["serial:/dev/ttyUSB0", "unix"], "give one board for the run"),
    (["a=serial:/dev/ttyUSB0", "b=serial:/dev/ttyUSB0"], "roles 'a' and 'b' both name serial:/dev/ttyUSB0"),
    (["relay="], "name a board spec after the role"),
    (["relay=jtag:0"], "unknown board kind"),
])
def test_bad_board_values_are_one_line_naming_them(values, error):
    with pytest.raises(HarnessError, match=error):
        BoardAssignment.parse(values)


ROLE_TEST = """
import pytest

@pytest.mark.boards(left="fw_left", right="fw_right")
def test_two_roles(boards):
    assert [r.name for r in boards] == ["left", "right"]
    assert boards.left.board is not boards.right.board
    assert boards.left.client_id != boards.right.client_id
    assert boards.left.sim.profile.name == "esp32" and boards.right.sim.profile.name == "esp32s3"
    assert boards.right.topic("status") == "hil/" + boards.right.client_id + "/status"
    for role in boards:
        role.start()
        role.console.expect("hello from " + role.name + " as " + role.client_id)
    assert "hello from right" not in boards.left.console.text

@pytest.mark.boards(left="fw_left")
def test_fails_and_shows_the_role_console(boards):
    boards.left.start()
    boards.left.console.expect("hello from left")
    assert False, "deliberate"

def test_boards_without_the_marker(boards):
    pass
"""

HELLO = ("import json\ncfg = json.load(open('hil_config.json'))\n"
         "print('hello from', cfg['extra']['hilsync']['me'], 'as', cfg['mqtt']['client_id'])\n")


def test_the_boards_fixture_gives_each_role_its_board_client_id_console_and_log(pytester):
    for name in ("fw_left", "fw_right"):
        (pytester.path / name).mkdir()
        (pytester.path / name / "main.py").write_text(HELLO)
    pytester.makepyfile(test_roles=ROLE_TEST)
    result = run_pytest(pytester, "--hil-artifacts", "arts", "--board", "right=unix:esp32s3")
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(["*the boards fixture needs @pytest.mark.boards(role=*",
                                 "*--- left: left?unix? ---*", "*hello from left as left-r*"])
    folder = pytester.path / "arts" / "test_roles.py_test_two_roles"
    assert sorted(p.name for p in folder.glob("console-*.log")) == ["console-left.log", "console-right.log"]
    assert "hello from right" in (folder / "console-right.log").read_text()


def test_roles_without_a_board_on_a_bench_skip_with_the_reason(pytester):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.boards(switch="fw", relay="fw")
        def test_pair(boards):
            pass

        @pytest.mark.boards(switch="fw")
        @pytest.mark.requires_sim("switch")
        def test_presses(boards):
            pass
    """)
    # No board is opened for a skipped test: the ports named here need not exist.
    result = run_pytest(pytester, "-rs", "--board", "serial:/dev/ttyNOPE0", "--board", "relay=serial:/dev/ttyNOPE1")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*role 'switch' has no board on this bench (--board serial:/dev/ttyNOPE0): give it "
                                 "one with --board switch=serial:PORT, or simulate it with --board switch=unix*"])
    result = run_pytest(pytester, "-rs", "--board", "switch=serial:/dev/ttyNOPE0", "-k", "presses")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs role 'switch' simulated: it is on serial:/dev/ttyNOPE0 in this run*"])


def test_a_bad_board_value_is_a_usage_error_naming_the_option(pytester):
    pytester.makepyfile("def test_nothing(): pass\n")
    result = run_pytest(pytester, "--board", "a=serial:/dev/ttyUSB0", "--board", "b=serial:/dev/ttyUSB0")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--board: roles 'a' and 'b' both name serial:/dev/ttyUSB0: one board per port*"])
