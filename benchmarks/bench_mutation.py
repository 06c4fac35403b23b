"""Mutation testing of the reference firmware by its deterministic scenarios: score and speed.

Measures, for weather_station, home_automation and industrial_monitor together (their shared
common/lib mutated once), against `scenarios/` less the fuzz scenarios:
  mutants, killed, score   of a sample of --mutants mutants spread evenly over every file and
                           operator (--all: every mutant), not cached, equivalent ones left out
  wall_s, s_per_mutant     the campaign's wall time (clean runs included) and per mutant run,
                           on --workers child pytests at once
  clean_run_s              the baseline, measured in the same run: one unmutated pass of each
                           firmware's scenarios (a child pytest), the mean over the firmwares
  s_per_mutant_ratio_to_clean_run
Prints one JSON object as its last line; progress and the survivors go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from micropython_hil.mutate import Campaign  # noqa: E402

FIRMWARES = ["firmware_under_test/weather_station", "firmware_under_test/home_automation",
             "firmware_under_test/industrial_monitor"]
# The deterministic scenarios: the fuzz runs (random seeds) may add kills, not carry the score.
PYTEST_ARGS = ["scenarios", "-m", "not fuzz", "--deselect", "scenarios/test_fuzz.py"]


def sample(ids: list[str], n: int) -> list[str]:
    """n ids spread evenly over the list (which is in file and line order)."""
    if n >= len(ids):
        return ids
    step = len(ids) / n
    return [ids[int(i * step)] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", type=int, default=100, help="how many mutants to run (a spread sample)")
    ap.add_argument("--all", action="store_true", help="every mutant (the reference score)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole campaign")
    ap.add_argument("--pytest-args", default=None, help="instead of: " + " ".join(PYTEST_ARGS))
    args = ap.parse_args()
    pytest_args = args.pytest_args.split() if args.pytest_args else PYTEST_ARGS

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    planner = Campaign(FIRMWARES, pytest_args, cwd=ROOT, cache=None)
    planned = planner.plan()
    marked, _ = planner.equivalents(planned)
    candidates = [p.mutant.id for p in planned if p.mutant.id not in marked]
    chosen = candidates if args.all else sample(candidates, args.mutants)
    progress(f"{len(planned)} mutants, {len(marked)} marked equivalent; running {len(chosen)}")
    began = time.perf_counter()
    campaign = Campaign(FIRMWARES, pytest_args, workers=args.workers, budget_s=args.budget, cache=None,
                        cwd=ROOT, only=chosen, progress=progress)
    report = campaign.run()
    wall = time.perf_counter() - began
    for r in report.survivors:
        progress(f"survivor {r.mutant.id}: {r.mutant.description}")
    run = len(report.run_here)
    clean = sum(report.clean_s.values()) / len(report.clean_s) if report.clean_s else 0.0
    s_per_mutant = wall / run if run else 0.0
    print(json.dumps({
        "mutants": report.killed + report.survived, "killed": report.killed, "survived": report.survived,
        "score": round(report.score, 1), "errors": report.count("error"), "not_run": report.count("not run"),
        "equivalent_marked": len(marked), "total_mutants": len(planned),
        "wall_s": round(wall, 1), "s_per_mutant": round(s_per_mutant, 2), "workers": args.workers,
        "clean_run_s": round(clean, 2), "clean_runs_s": report.clean_s,
        "s_per_mutant_ratio_to_clean_run": round(s_per_mutant / clean, 2) if clean else None,
        "pytest_args": pytest_args}))


if __name__ == "__main__":
    main()
