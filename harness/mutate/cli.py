"""`hil mutate FIRMWARE [FIRMWARE ...] [-- PYTEST ARGS]`: measure how much of a firmware its tests check.

    hil mutate firmware_under_test/weather_station -- scenarios -m "not fuzz"

Plants one bug at a time in the firmware's source (and the shared code its manifest includes),
runs the tests that deploy it (the PYTEST ARGS select them, as for pytest; each run stops at its
first failing test) and prints the score, each survivor as a diff, and which test killed what.
Several firmware folders share one run: code they include in common is mutated once.
Progress goes to stderr, the report to stdout and, as JSON, to .hil-mutate/report.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import HarnessError
from .operators import OPERATORS, mutants_of
from .runner import DEFAULT_CACHE, Campaign
from .sources import FirmwareTree


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="mutants run at once (default: the CPU count)")
    parser.add_argument("--budget", type=float, default=None, metavar="S",
                        help="seconds; mutants not started by then are reported as not run")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="seconds one mutant's tests may take (default: 3x the clean run + 30, at least 60)")
    parser.add_argument("--operators", default=None, metavar="NAMES",
                        help="comma-separated operators to use (default: all): " + ", ".join(OPERATORS))
    parser.add_argument("--exclude", action="append", default=None, metavar="GLOB",
                        help="leave out source files matching this (relative to the firmware folder, "
                             "e.g. 'lib/vendor_*.py'); repeatable")
    parser.add_argument("--only", action="append", default=None, metavar="ID",
                        help="run only mutants whose id starts with this (e.g. 'app.py:Station.step'); repeatable")
    parser.add_argument("--cache", default=None, metavar="FILE",
                        help=f"results of earlier runs (default {DEFAULT_CACHE})")
    parser.add_argument("--no-cache", action="store_true", default=None, help="run every mutant again")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write the report as JSON here (default .hil-mutate/report.json)")
    parser.add_argument("--min-score", type=float, default=None, metavar="PCT",
                        help="exit status 1 when the score is below this percentage")
    parser.add_argument("--list", action="store_true", default=None, help="list the mutants and run nothing")
    parser.add_argument("-v", "--verbose", action="store_true", default=None, help="a line per mutant in the report")


def add_arguments(subparser: argparse.ArgumentParser) -> None:
    """The `mutate` subcommand's arguments (harness/cli.py adds the subparser)."""
    _add_options(subparser)
    subparser.add_argument("target", nargs=argparse.REMAINDER, metavar="FIRMWARE [FIRMWARE ...] [-- PYTEST ARGS]",
                           help="firmware folders to mutate, then pytest's arguments selecting the tests")
    subparser.set_defaults(func=run)


def split_target(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(firmware folders, pytest args) from the raw remainder; options between the firmware
    folders and `--` are parsed here (argparse's remainder takes them raw)."""
    target = list(args.target or [])
    head, tail = (target[:target.index("--")], target[target.index("--") + 1:]) if "--" in target else (target, [])
    parser = argparse.ArgumentParser(prog="hil mutate", add_help=False)
    _add_options(parser)
    parser.add_argument("firmware", nargs="*")
    parser.parse_args(head, namespace=args)
    return list(args.firmware), tail


def run(args: argparse.Namespace) -> int:
    """Run `hil mutate`; the exit status (1: score below --min-score)."""
    firmwares, pytest_args = split_target(args)
    if not firmwares:
        raise HarnessError("mutate: name the firmware folder(s) to mutate, e.g. "
                           "hil mutate firmware_under_test/weather_station -- scenarios")
    operators = None
    if args.operators:
        operators = {name.strip() for name in args.operators.split(",") if name.strip()}
    if args.list:
        return _list(firmwares, operators, tuple(args.exclude or ()))

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    cache = None if args.no_cache else (args.cache or DEFAULT_CACHE)
    campaign = Campaign(firmwares, pytest_args, workers=args.workers, budget_s=args.budget, cache=cache,
                        operators=operators, exclude=tuple(args.exclude or ()), timeout_s=args.timeout,
                        only=tuple(args.only or ()), progress=progress)
    report = campaign.run()
    out = Path(args.json or Path(".hil-mutate") / "report.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report.to_json(), indent=1))
    print(report.text(verbose=bool(args.verbose)))
    if args.min_score is not None and report.score < args.min_score:
        print(f"hil mutate: score {report.score:.1f}% is below --min-score {args.min_score:g}", file=sys.stderr)
        return 1
    return 0


def _list(firmwares: list[str], operators: set[str] | None, exclude: tuple[str, ...]) -> int:
    seen = set()
    for folder in firmwares:
        tree = FirmwareTree(folder, exclude=exclude)
        for name, path in tree.sources().items():
            if path in seen:
                continue
            seen.add(path)
            source = path.read_text()
            for m in mutants_of(source, name, operators):
                print(f"{m.id}  line {m.line}: {m.description}")
    return 0
