"""The campaign's report: the score, each survivor as a diff, which test killed which mutant, time
per mutant; as text for a terminal and as JSON for tools.

The score is killed / (killed + survived), in percent; a mutant whose tests timed out counts as
killed (the firmware no longer behaved in time). Equivalent mutants, runs that broke (errors) and
mutants the time budget left out are listed but not counted.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .result import EQUIVALENT, ERROR, KILLED, NOT_RUN, SURVIVED, TIMEOUT, MutantResult


@dataclass
class MutationReport:
    """All results of one campaign."""

    results: list[MutantResult]
    firmwares: list[str]
    wall_s: float
    clean_s: dict[str, float]            # each firmware's clean run (its tests, unmutated), seconds
    workers: int
    stale_marks: list[str] = field(default_factory=list)

    def count(self, *statuses: str) -> int:
        return sum(1 for r in self.results if r.status in statuses)

    @property
    def killed(self) -> int:
        return self.count(KILLED, TIMEOUT)

    @property
    def survived(self) -> int:
        return self.count(SURVIVED)

    @property
    def score(self) -> float:
        """Percent of the counted mutants that were killed (100 when none was counted)."""
        counted = self.killed + self.survived
        return 100.0 * self.killed / counted if counted else 100.0

    @property
    def survivors(self) -> list[MutantResult]:
        return [r for r in self.results if r.status == SURVIVED]

    @property
    def run_here(self) -> list[MutantResult]:
        """The mutants this campaign ran (not cached, not marked, not left out)."""
        return [r for r in self.results if not r.cached and r.status in (KILLED, TIMEOUT, SURVIVED, ERROR)]

    @property
    def s_per_mutant(self) -> float:
        """Wall time per mutant run here (the campaign's wall time over them, workers included)."""
        n = len(self.run_here)
        return self.wall_s / n if n else 0.0

    def summary(self) -> str:
        parts = [f"{self.killed} of {self.killed + self.survived} killed", f"{self.survived} survived"]
        for status, label in ((EQUIVALENT, "equivalent"), (ERROR, "errors"), (NOT_RUN, "not run (budget)")):
            if self.count(status):
                parts.append(f"{self.count(status)} {label}")
        cached = sum(1 for r in self.results if r.cached)
        timing = f"{self.wall_s:.0f} s wall, {len(self.run_here)} run"
        if self.run_here:
            timing += f" ({self.s_per_mutant:.1f} s each on {self.workers} workers)"
        if cached:
            timing += f", {cached} from the cache"
        return f"mutation score {self.score:.1f}% ({', '.join(parts)}); {timing}"

    def text(self, verbose: bool = False) -> str:
        """The report for a terminal: per-mutant lines (verbose), killers, survivors, the score."""
        lines = []
        if verbose:
            lines.append("mutants:")
            for r in self.results:
                lines.append("  " + _mutant_line(r))
        killers = Counter(r.killer for r in self.results if r.status == KILLED and r.killer)
        if killers:
            lines.append("tests that killed mutants:")
            lines += [f"  {n:4}  {test}" for test, n in killers.most_common()]
        times = [r.seconds for r in self.run_here]
        if times:
            lines.append(f"time per mutant: median {statistics.median(times):.1f} s, max {max(times):.1f} s "
                         f"(child pytest runs; clean runs: "
                         + ", ".join(f"{k} {v:.1f} s" for k, v in self.clean_s.items()) + ")")
        for status, title in ((ERROR, "errors (the test run broke, not counted)"),
                              (TIMEOUT, "timed out (counted as killed)")):
            listed = [r for r in self.results if r.status == status]
            if listed:
                lines.append(f"{title}:")
                lines += [f"  {r.mutant.id}: {r.reason.splitlines()[0] if r.reason else ''}" for r in listed]
        if self.stale_marks:
            lines.append("equivalence marks that match no mutant (stale: remove them):")
            lines += [f"  {m}" for m in self.stale_marks]
        survivors = self.survivors
        if survivors:
            lines.append(f"survivors ({len(survivors)}): no test failed on these; strengthen a test, or mark "
                         "the mutant equivalent with its reason in mutants.equivalent.json beside the firmware")
            for r in survivors:
                lines.append(f"--- {r.mutant.id}  ({r.mutant.description})")
                lines.append(r.diff.rstrip("\n"))
        lines.append(self.summary())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"firmwares": self.firmwares, "score": round(self.score, 2), "killed": self.killed,
                "survived": self.survived, "mutants": len(self.results),
                "counts": {s: self.count(s) for s in (KILLED, TIMEOUT, SURVIVED, EQUIVALENT, ERROR, NOT_RUN)},
                "wall_s": round(self.wall_s, 2), "s_per_mutant": round(self.s_per_mutant, 2),
                "workers": self.workers, "clean_s": self.clean_s, "stale_marks": self.stale_marks,
                "results": [r.to_json() for r in self.results]}


def _mutant_line(r: MutantResult) -> str:
    how = {KILLED: f"by {r.killer}", TIMEOUT: r.reason, SURVIVED: "", EQUIVALENT: r.reason,
           ERROR: r.reason.splitlines()[0] if r.reason else "", NOT_RUN: r.reason}.get(r.status, "")
    cached = " (cached)" if r.cached else f" ({r.seconds:.1f} s)" if r.seconds else ""
    return f"{r.status:10} {r.mutant.path}:{r.mutant.line} {r.mutant.description} {how}{cached}".rstrip()
