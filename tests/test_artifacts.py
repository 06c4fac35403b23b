"""The artifact folder: cleaned at each session's start (only when the harness made it), an index
of the run's tests and files at the end, and each failure report naming its test's folder."""

TESTS = """
def test_good(board):
    board.exec("print(1)")

def test_bad(board):
    board.put_bytes(b"print('about to fail')", "main.py")
    board.run().wait(5)
    assert False, "deliberate"
"""


def run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--hil-artifacts", "arts", *args, timeout=120)


def test_index_cleaning_and_the_folder_in_failure_reports(pytester):
    pytester.makepyfile(test_arts=TESTS)
    first = run(pytester, "--junitxml", "out.xml")
    first.assert_outcomes(passed=1, failed=1)
    arts = pytester.path / "arts"
    xml = (pytester.path / "out.xml").read_text()
    assert f'name="hil artifacts" value="{arts / "test_arts.py_test_bad"}"' in xml
    assert 'name="hil board" value="unix#' in xml and '(esp32)"' in xml
    first.stdout.fnmatch_lines(["*hil artifacts*", f"*{arts / 'test_arts.py_test_bad'}*", f"*hil artifacts: {arts / 'index.html'}*"])
    index = (arts / "index.html").read_text()
    assert "test_arts.py::test_good" in index and "test_arts.py::test_bad" in index
    assert 'href="test_arts.py_test_bad/console.log"' in index and ">failed<" in index

    (arts / "stale_from_an_earlier_run").mkdir()
    run(pytester, "-k", "good").assert_outcomes(passed=1)
    assert not (arts / "stale_from_an_earlier_run").exists() and not (arts / "test_arts.py_test_bad").exists()
    assert "test_bad" not in (arts / "index.html").read_text()


def test_a_folder_the_harness_did_not_make_is_not_emptied(pytester):
    pytester.makepyfile(test_arts=TESTS)
    mine = pytester.path / "arts"
    mine.mkdir()
    (mine / "my_notes.txt").write_text("keep me")
    run(pytester, "-k", "good").assert_outcomes(passed=1)
    assert (mine / "my_notes.txt").read_text() == "keep me"


def test_artifacts_land_where_pytest_started_when_the_firmware_lies_elsewhere(pytester, tmp_path):
    # A --firmware outside the test folder moves pytest's rootdir up to the common parent; the
    # artifacts must stay under the directory pytest was started in.
    firmware = tmp_path / "elsewhere" / "fw"
    firmware.mkdir(parents=True)
    (firmware / "main.py").write_text("print('hello from elsewhere')\n")
    tests = pytester.mkdir("project")
    (tests / "test_fw.py").write_text("def test_runs(start_firmware, board):\n    start_firmware().run.wait(5)\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", str(tests / "test_fw.py"), "--firmware",
                                           str(firmware), timeout=120)
    result.assert_outcomes(passed=1)
    logs = list((pytester.path / ".hil-artifacts").rglob("console.log"))
    assert len(logs) == 1 and "hello from elsewhere" in logs[0].read_text()
