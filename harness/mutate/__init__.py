"""Mutation testing of firmware on simulated boards: how much of a firmware its tests really check.

Operators plant one plausible firmware bug at a time in the firmware's MicroPython source (its
folder and the shared code its manifest includes); each mutant runs against the tests that deploy
that firmware, in a child pytest on a copy; the report gives the score, each survivor as a diff,
which test killed which mutant and the time each took. See `hil mutate --help`.
"""

from .cache import ResultCache
from .equivalents import load_equivalents
from .operators import OPERATORS, Mutant, mutants_of
from .report import MutationReport
from .result import EQUIVALENT, ERROR, KILLED, NOT_RUN, STATUSES, SURVIVED, TIMEOUT, MutantResult
from .runner import DEFAULT_CACHE, Campaign, Planned
from .sources import EQUIVALENT_FILE, FirmwareTree
from .testrun import TestOutcome, TestRun, run_tests

__all__ = ["DEFAULT_CACHE", "EQUIVALENT", "EQUIVALENT_FILE", "ERROR", "KILLED", "NOT_RUN", "OPERATORS", "STATUSES",
           "SURVIVED", "TIMEOUT", "Campaign", "FirmwareTree", "Mutant", "MutantResult", "MutationReport", "Planned",
           "ResultCache", "TestOutcome", "TestRun", "load_equivalents", "mutants_of", "run_tests"]
