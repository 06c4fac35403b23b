"""The run's artifact folder: cleaned at the start of a session, indexed at its end.

Each test's files (console.log, telemetry.jsonl, benchmark plots) land in a folder of their own
under the artifact root (`--hil-artifacts`, default `.hil-artifacts` where pytest started). A
root the harness made carries a marker; a new session empties a marked root (what an earlier run
left) and never touches a folder without the marker, which is the user's. At the end,
index.html lists every test with its outcome and links to its files. Under pytest-xdist the
controller does both; the workers only write.
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import pytest

from .options import options

MARKER = ".hil-artifacts-root"
INDEX = "index.html"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def folder_of(config: pytest.Config, nodeid: str) -> Path:
    """The artifact folder of one test (the hil_artifacts fixture creates it)."""
    return options(config).artifacts / re.sub(r"[^\w.-]+", "_", nodeid).strip("_")


class ArtifactHooks:
    """Session hooks: clean the root at the start, write the index at the end."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}  # nodeid -> outcome, as the reports come

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        config = session.config
        if _is_worker(config):
            return
        root = options(config).artifacts
        if root.is_dir() and (root / MARKER).is_file():
            for entry in root.iterdir():
                if entry.name != MARKER:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        elif root.exists() and any(root.iterdir()):
            return  # not ours to clean; the index still goes there at the end
        root.mkdir(parents=True, exist_ok=True)
        (root / MARKER).write_text("made by pytest-micropython-hil: emptied at each session's start\n")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.outcomes[report.nodeid] = (report.outcome if report.when == "call"
                                            else f"{report.outcome} in {report.when}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        if _is_worker(config):
            return
        root = options(config).artifacts
        if root.is_dir():
            write_index(root, {nodeid: (outcome, folder_of(config, nodeid))
                               for nodeid, outcome in self.outcomes.items()})

    def pytest_terminal_summary(self, terminalreporter, config: pytest.Config) -> None:
        index = options(config).artifacts / INDEX
        if not _is_worker(config) and index.is_file():
            terminalreporter.write_line(f"hil artifacts: {index}")


def write_index(root: Path, tests: dict[str, tuple[str, Path]]) -> Path:
    """index.html: each test, its outcome, links to the files in its folder."""
    rows = []
    for nodeid, (outcome, folder) in sorted(tests.items()):
        files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        links = " ".join(f'<a href="{html.escape(p.relative_to(root).as_posix())}">{html.escape(p.name)}</a>'
                         for p in files)
        colour = {"passed": "#060", "failed": "#a00", "skipped": "#666"}.get(outcome.split()[0], "#a60")
        rows.append(f'<tr><td>{html.escape(nodeid)}</td><td style="color:{colour}">{html.escape(outcome)}</td>'
                    f"<td>{links}</td></tr>")
    page = ("<!doctype html><meta charset=utf-8><title>HIL artifacts</title>"
            "<style>body{font-family:sans-serif}td{padding:2px 8px;vertical-align:top}</style>"
            "<h1>HIL artifacts</h1><table><tr><th>test</th><th>outcome</th><th>files</th></tr>"
            + "".join(rows) + "</table>\n")
    path = root / INDEX
    path.write_text(page)
    return path
