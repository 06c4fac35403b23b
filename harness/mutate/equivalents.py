"""Mutants marked equivalent: changes no test could tell from the original, each with its reason,
kept beside the firmware in `mutants.equivalent.json`:

    {"app.py:Station.sleep_ms:constant:28cdb85e": "the idle cap: 1001 ms instead of 1000 changes nothing observable",
     "../common/lib/link.py:Link.poll:boundary:0ab1c2d3": "..."}

A marked mutant is not run and not counted in the score. A mark whose mutant no longer exists
(its code changed) is reported as stale, so marks do not outlive what they were about.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import HarnessError
from .sources import EQUIVALENT_FILE


def load_equivalents(firmware: Path) -> dict[str, str]:
    """The marks of one firmware folder: mutant id -> reason ({} without the file)."""
    path = Path(firmware) / EQUIVALENT_FILE
    if not path.exists():
        return {}
    try:
        marks = json.loads(path.read_text())
    except ValueError as e:
        raise HarnessError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(marks, dict):
        raise HarnessError(f"{path}: must hold a JSON object, mutant id -> reason")
    for key, reason in marks.items():
        if not isinstance(reason, str) or not reason.strip():
            raise HarnessError(f"{path}: {key}: give the reason the mutant is equivalent (a non-empty string)")
    return marks
