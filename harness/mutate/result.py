"""What happened to each mutant: the record the runner makes, the cache keeps and the report shows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .operators import Mutant

KILLED = "killed"          # a test failed on it
TIMEOUT = "timeout"        # its tests did not finish in the time allowed: counted as killed
SURVIVED = "survived"      # every test passed on it
EQUIVALENT = "equivalent"  # marked as indistinguishable from the original: not run, not counted
ERROR = "error"            # the test run itself broke (not the firmware): not counted
NOT_RUN = "not run"        # the time budget ran out first: not counted
STATUSES = (KILLED, TIMEOUT, SURVIVED, EQUIVALENT, ERROR, NOT_RUN)


@dataclass
class MutantResult:
    """One mutant's outcome: which test killed it and why, or why it was not counted."""

    mutant: Mutant
    status: str
    killer: str | None = None        # node id of the first failing test
    reason: str = ""                 # the failure's message, the equivalence reason, the error
    seconds: float = 0.0             # wall time of its test runs (0 when cached or not run)
    cached: bool = False             # taken from an earlier run's cache
    firmwares: list[str] = field(default_factory=list)  # the firmware folders whose tests it met
    diff: str = ""

    @property
    def counted(self) -> bool:
        """Part of the score: killed, timed out or survived."""
        return self.status in (KILLED, TIMEOUT, SURVIVED)

    def to_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in asdict(self).items() if k != "mutant"}
        doc.update(id=self.mutant.id, path=self.mutant.path, line=self.mutant.line,
                   operator=self.mutant.operator, description=self.mutant.description)
        return doc
