"""A mutation campaign: every mutant of one or more firmwares, run against the tests that deploy them.

    campaign = Campaign(["firmware_under_test/weather_station"], ["scenarios", "-m", "not fuzz"])
    report = campaign.run()
    print(report.text())

First a clean run per firmware: its tests (the ones whose @pytest.mark.firmware names it) on an
unmutated copy must pass, and give each test's time. Then each mutant, `workers` at a time: a copy
of the firmware with the mutation (shared code included by several firmwares is mutated once and
run against each of them, until one kills it), and a child pytest stopping at the first failing
test. Tests that killed mutants in the same function run first, then those that killed the most
mutants per second of their own run, then the fastest. Results are cached by source digest (cache.py); mutants marked equivalent
(equivalents.py) are not run; mutants not started within the time budget are reported as not run.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .. import tempdirs
from ..errors import HarnessError
from ..tether import Tether
from .cache import ResultCache
from .equivalents import load_equivalents
from .operators import Mutant, mutants_of
from .report import MutationReport
from .result import EQUIVALENT, ERROR, KILLED, NOT_RUN, SURVIVED, TIMEOUT, MutantResult
from .sources import FirmwareTree
from .testrun import TestRun, run_tests

DEFAULT_CACHE = Path(".hil-mutate") / "cache.json"


@dataclass
class Planned:
    """A mutant and the firmwares whose tests it runs against (several, for shared code)."""

    mutant: Mutant
    file: Path                     # the mutated file
    trees: list[FirmwareTree]

    def ids(self) -> list[tuple[FirmwareTree, str]]:
        """The mutant's id as each firmware names it (its path relative to that folder)."""
        tail = self.mutant.id[len(self.mutant.path):]
        return [(tree, tree.relative(self.file) + tail) for tree in self.trees]


class Campaign:
    """Mutants of firmware folders run against the tests that deploy them (see the module doc)."""

    def __init__(self, firmwares: Sequence[str | Path], pytest_args: Sequence[str] = (),
                 workers: int | None = None, budget_s: float | None = None,
                 cache: str | Path | None = DEFAULT_CACHE, operators: set[str] | None = None,
                 exclude: Sequence[str] = (), cwd: str | Path | None = None, timeout_s: float | None = None,
                 only: Sequence[str] = (), progress: Callable[[str], None] | None = None):
        if not firmwares:
            raise HarnessError("name at least one firmware folder to mutate")
        self.cwd = Path(cwd or Path.cwd()).resolve()
        self.trees = [FirmwareTree(self.cwd / f, exclude=tuple(exclude)) for f in firmwares]
        self.pytest_args = list(pytest_args)
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.budget_s = budget_s or None
        cache_path = None if cache is None else (self.cwd / cache)
        self.cache = ResultCache(cache_path)
        self.operators = operators
        self.only = list(only)         # mutant ids (or id prefixes) to run; others are left out
        self.timeout_s = timeout_s
        self.progress = progress or (lambda line: None)
        self._lock = threading.Lock()
        self._scope_kills: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self._kills: Counter = Counter()  # kills by each test so far, in this campaign
        self._scope_firmware_kills: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self._live: set = set()           # child pytest processes running now
        self._stopping = False
        self._clean: dict[Path, TestRun] = {}
        self._durations: dict[str, float] = {}

    # -- what is mutated -----------------------------------------------------------------------
    def plan(self) -> list[Planned]:
        """Every mutant, once per source file (a file several firmwares include is one set)."""
        by_file: dict[Path, tuple[str, list[FirmwareTree]]] = {}
        for tree in self.trees:
            for name, path in tree.sources().items():
                by_file.setdefault(path, (name, []))[1].append(tree)
        planned = []
        for path, (name, trees) in by_file.items():
            for mutant in mutants_of(path.read_text(), name, self.operators):
                if not self.only or any(mutant.id.startswith(prefix) for prefix in self.only):
                    planned.append(Planned(mutant, path, trees))
        return planned

    def equivalents(self, planned: list[Planned]) -> tuple[dict[str, str], list[str]]:
        """(mutant id -> reason for those marked, the marks that match no mutant: stale)."""
        marks = {tree.path: load_equivalents(tree.path) for tree in self.trees}
        marked, used = {}, set()
        for p in planned:
            for tree, fid in p.ids():
                if fid in marks[tree.path]:
                    marked[p.mutant.id] = marks[tree.path][fid]
                    used.add((tree.path, fid))
        stale = []
        if not self.only:
            for tree in self.trees:
                sources = set(tree.sources())
                for fid in marks[tree.path]:
                    path, _, rest = fid.partition(":")
                    operator = rest.split(":")[-2] if rest.count(":") >= 2 else ""
                    selected = self.operators is None or operator in self.operators
                    if (tree.path, fid) not in used and (path not in sources or selected):
                        stale.append(f"{tree.path.name}: {fid}")
        return marked, stale

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> MutationReport:
        began = time.monotonic()
        tempdirs.remove_stale()  # what a killed campaign left: mutant copies, child boards' flash
        planned = self.plan()
        marked, stale = self.equivalents(planned)
        tether = Tether("hil-mutate")
        try:
            clean_s = self._clean_runs(tether)
            results: list[MutantResult | None] = [None] * len(planned)
            todo = []
            for i, p in enumerate(planned):
                if p.mutant.id in marked:
                    results[i] = MutantResult(p.mutant, EQUIVALENT, reason=marked[p.mutant.id],
                                              firmwares=[t.name for t in p.trees], diff=self._diff(p))
                    continue
                key = self._key(p)
                suite = self._suite_digest(p.trees)
                hit = self.cache.lookup(key, suite, self._killer_digest)
                if hit is not None:
                    results[i] = MutantResult(p.mutant, hit["status"], hit.get("killer"), hit.get("reason", ""),
                                              hit.get("seconds", 0.0), True, [t.name for t in p.trees], self._diff(p))
                    if hit["status"] == KILLED and hit.get("killer"):
                        self._count_kill(p, hit["killer"])
                else:
                    todo.append((i, p, key, suite))
            self.progress(f"{len(planned)} mutants: {len(todo)} to run, {len(planned) - len(todo) - len(marked)} "
                          f"cached, {len(marked)} marked equivalent; {self.workers} workers")
            done = [0]

            def work(i: int, p: Planned, key: str, suite: str) -> None:
                if self._stopping:
                    return
                if self.budget_s is not None and time.monotonic() - began > self.budget_s:
                    results[i] = MutantResult(p.mutant, NOT_RUN, reason=f"time budget of {self.budget_s:g} s spent",
                                              firmwares=[t.name for t in p.trees], diff=self._diff(p))
                else:
                    results[i] = self._run_mutant(tether, p, key, suite)
                with self._lock:
                    done[0] += 1
                    self.progress(_progress_line(done[0], len(todo), results[i]))

            with ThreadPoolExecutor(self.workers, thread_name_prefix="hil-mutant") as pool:
                futures = [pool.submit(work, *job) for job in todo]
                try:
                    for f in futures:
                        f.result()
                except BaseException:  # Ctrl-C, SIGTERM, a broken mutant: stop the rest now
                    self._stopping = True
                    for f in futures:
                        f.cancel()
                    for proc in list(self._live):
                        proc.kill()  # our own children, by pid; their boards die with them
                    raise
        finally:
            tether.close()
        return MutationReport([r for r in results if r is not None], [str(t.path) for t in self.trees],
                              time.monotonic() - began, clean_s, self.workers, stale)

    def _clean_runs(self, tether: Tether) -> dict[str, float]:
        """Each firmware's tests on an unmutated copy: they must pass. Their times order the tests."""
        def clean(tree: FirmwareTree) -> TestRun:
            workdir = tempdirs.make_temp_dir("mutant")
            try:
                copy = tree.copy(workdir / "src")
                return run_tests(tether, self.pytest_args, copy, tree.path, self.cwd, workdir, exitfirst=True,
                                 live=self._live)
            finally:
                tempdirs.remove(workdir)

        with ThreadPoolExecutor(self.workers, thread_name_prefix="hil-clean") as pool:
            runs = list(pool.map(clean, self.trees))
        for tree, run in zip(self.trees, runs):
            if not run.selected and not run.errors and not run.timed_out:
                raise HarnessError(f"{tree.path}: no selected test deploys this firmware (tests name it with "
                                   f"@pytest.mark.firmware(...); pytest args: {' '.join(self.pytest_args) or '(none)'})")
            if run.broken:
                raise HarnessError(f"{tree.path}: the tests could not run on the unmutated firmware: {run.broken}")
            if run.timed_out:
                raise HarnessError(f"{tree.path}: the tests did not finish on the unmutated firmware")
            failure = run.first_failure
            if failure is not None:
                raise HarnessError(f"{tree.path}: {failure.nodeid} fails on the unmutated firmware "
                                   f"({failure.message}); fix or deselect it before measuring mutants")
            self._clean[tree.path] = run
            for o in run.outcomes:
                self._durations[o.nodeid] = o.seconds
        return {tree.name: round(run.seconds, 2) for tree, run in zip(self.trees, runs)}

    def _run_mutant(self, tether: Tether, p: Planned, key: str, suite: str) -> MutantResult:
        mutated = p.mutant.apply(p.file.read_text())
        diff = self._diff(p, mutated)
        result = MutantResult(p.mutant, SURVIVED, firmwares=[t.name for t in p.trees], diff=diff)
        began = time.monotonic()
        # Shared code meets first the firmware whose tests killed its neighbours, then the one
        # whose tests ran fastest: most kills come early.
        with self._lock:
            by_firmware = Counter(self._scope_firmware_kills[(str(p.file), p.mutant.scope)])
        for tree in sorted(p.trees, key=lambda t: (-by_firmware[t.path], self._clean[t.path].seconds)):
            clean = self._clean[tree.path]
            workdir = tempdirs.make_temp_dir("mutant")
            try:
                copy = tree.copy(workdir / "src", {p.file: mutated})
                timeout = self.timeout_s or max(60.0, 3 * clean.seconds + 30)
                run = run_tests(tether, self.pytest_args, copy, tree.path, self.cwd, workdir,
                                tests=self._order(p, clean.selected), test_files=sorted(set(clean.test_files.values())),
                                timeout=timeout, live=self._live)
            finally:
                tempdirs.remove(workdir)
            if run.timed_out:
                result.status, result.reason = TIMEOUT, f"its tests did not finish in {timeout:g} s"
                result.killer = run.outcomes[-1].nodeid if run.outcomes else None
                break
            if run.broken:
                result.status, result.reason = ERROR, run.broken
                break
            failure = run.first_failure
            if failure is not None:
                result.status, result.killer, result.reason = KILLED, failure.nodeid, failure.message
                self._count_kill(p, failure.nodeid, tree)
                break
        result.seconds = round(time.monotonic() - began, 2)
        if result.status != ERROR:
            self.cache.store(key, {"status": result.status, "killer": result.killer, "reason": result.reason,
                                   "seconds": result.seconds, "suite": suite, "id": p.mutant.id,
                                   "killer_digest": self._killer_digest(result.killer) if result.killer else None})
        return result

    # -- test order, digests, diffs ----------------------------------------------------------
    def _order(self, p: Planned, selected: list[str]) -> list[str]:
        """Tests that killed mutants in the same function first, then the ones that kill the most
        per second of their run, then the fastest."""
        with self._lock:
            scope = Counter(self._scope_kills[(str(p.file), p.mutant.scope)])
            kills = Counter(self._kills)

        def key(n: str) -> tuple:
            seconds = max(self._durations.get(n, 0.0), 0.05)
            return -scope[n], -kills[n] / seconds, seconds

        return sorted(selected, key=key)

    def _count_kill(self, p: Planned, nodeid: str, tree: FirmwareTree | None = None) -> None:
        with self._lock:
            self._scope_kills[(str(p.file), p.mutant.scope)][nodeid] += 1
            self._kills[nodeid] += 1
            if tree is not None:
                self._scope_firmware_kills[(str(p.file), p.mutant.scope)][tree.path] += 1

    def _key(self, p: Planned) -> str:
        """The mutant's source: the mutated file's text, where it is, which firmwares it is in."""
        mutated = p.mutant.apply(p.file.read_text())
        where = [p.mutant.path, *sorted(t.name for t in p.trees)]
        return hashlib.sha256(json.dumps(where).encode() + b"\0" + mutated.encode()).hexdigest()

    def _test_files(self, trees: Sequence[FirmwareTree] | None = None) -> tuple[dict[str, str], list[str]]:
        files, conftests = {}, set()
        for path, run in self._clean.items():
            if trees is None or any(t.path == path for t in trees):
                files.update(run.test_files)
                conftests.update(run.conftests)
        return files, sorted(conftests)

    def _suite_digest(self, trees: Sequence[FirmwareTree]) -> str:
        """The tests a mutant of these firmwares meets: their files, node ids, the pytest args."""
        files, conftests = self._test_files(trees)
        h = hashlib.sha256(json.dumps(self.pytest_args).encode())
        for nodeid in sorted(files):
            h.update(nodeid.encode() + b"\0")
        for path in sorted(set(files.values())) + conftests:
            h.update(_file_digest(path).encode())
        return h.hexdigest()

    def _killer_digest(self, nodeid: str) -> str | None:
        files, conftests = self._test_files()
        if nodeid not in files:
            return None
        h = hashlib.sha256(json.dumps(self.pytest_args).encode() + nodeid.encode())
        for path in [files[nodeid], *conftests]:
            h.update(_file_digest(path).encode())
        return h.hexdigest()

    def _diff(self, p: Planned, mutated: str | None = None) -> str:
        original = p.file.read_text()
        mutated = mutated if mutated is not None else p.mutant.apply(original)
        return "".join(difflib.unified_diff(original.splitlines(True), mutated.splitlines(True),
                                            f"a/{p.mutant.path}", f"b/{p.mutant.path}", n=2))


def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


def _progress_line(n: int, total: int, r: MutantResult) -> str:
    by = f" by {r.killer}" if r.status == KILLED and r.killer else ""
    return f"[{n}/{total}] {r.status:8} {r.mutant.path}:{r.mutant.line} {r.mutant.description}{by} ({r.seconds:.1f} s)"
