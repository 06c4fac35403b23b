"""Differential fuzzing: a firmware's own function on the board against a CPython reference.

The board runs `function(payload)` for a batch of payloads in one REPL round trip (the firmware
is deployed but not running); the host runs `reference(payload)` on the same bytes. Results are
compared in a canonical form both sides compute the same way (floats as '%.12g' text, dicts as
sorted pairs, exceptions by class name), and the first difference fails, shrunk by hypothesis.
The board builds the canonical form recursively: a result nested deeper than about 80 levels
exceeds MicroPython's recursion limit there and comes back as ('err', 'RuntimeError').

    diff = Differential(board, setup="import app", function="lambda b: app.Node.parse(None, b)",
                        reference=reference_parse)
    diff.run(payloads(schema), examples=50)
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, Phase, given, seed as hyp_seed, settings
from hypothesis import strategies as st

from ..board.board import Board
from ..errors import BoardException
from ..errors import DifferenceFound
from .progress import DEFAULT_EVERY_S, Progress
from .runner import example_database, statistics_of

# Defined on the board and mirrored by canon() below: the two must agree on every value.
_BOARD_CANON = """\
def _fz_canon(v):
    if isinstance(v, float):
        return ('float', '%.12g' % v)
    if isinstance(v, dict):
        return ('dict', sorted([(_fz_canon(k), _fz_canon(x)) for k, x in v.items()]))
    if isinstance(v, (list, tuple)):
        return [_fz_canon(x) for x in v]
    if isinstance(v, (bytes, bytearray)):
        return ('bytes', bytes(v))
    return v

def _fz_run(fn, items):
    for b in items:
        try:
            r = ('ok', _fz_canon(fn(b)))
        except Exception as e:
            r = ('err', type(e).__name__)
        print(repr(r))
"""


def canon(v: Any) -> Any:
    """The host half of the canonical form (see _BOARD_CANON)."""
    if isinstance(v, float):
        return ("float", "%.12g" % v)
    if isinstance(v, dict):
        return ("dict", sorted([(canon(k), canon(x)) for k, x in v.items()]))
    if isinstance(v, (list, tuple)):
        return [canon(x) for x in v]
    if isinstance(v, (bytes, bytearray)):
        return ("bytes", bytes(v))
    return v


def outcome(reference: Callable[[bytes], Any], payload: bytes) -> tuple:
    """('ok', canonical value) or ('err', exception class name), as the board reports it."""
    try:
        return ("ok", canon(reference(payload)))
    except Exception as e:  # noqa: BLE001 - any exception is an outcome to compare
        return ("err", type(e).__name__)


class Differential:
    """One board function against one CPython function, over payload bytes."""

    def __init__(self, board: Board, function: str, reference: Callable[[bytes], Any], setup: str = "",
                 error_names: dict[str, str] | None = None):
        self.board, self.function, self.reference = board, function, reference
        # Exception classes that mean the same on both sides (e.g. UnicodeError vs UnicodeDecodeError).
        self.error_names = error_names or {}
        self.compared = 0
        board.exec(setup + "\n" + _BOARD_CANON + f"\n_fz_fn = {function}\n")

    def _norm(self, result: tuple) -> tuple:
        if result[0] == "err":
            return ("err", self.error_names.get(result[1], result[1]))
        return result

    def _read(self, line: str, on_host: tuple) -> tuple:
        """The board's result from its printed line. Text CPython cannot read back (nested past
        its parser's limit, or a character past U+10FFFF that MicroPython decoded from invalid
        UTF-8) agrees only if it is the host result's own text."""
        try:
            return self._norm(ast.literal_eval(line))
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            if line == repr(on_host):
                return on_host
            return ("ok" if line.startswith("('ok'") else "err", f"unreadable on the host: {line[:300]}")

    def compare(self, payloads: list[bytes]) -> None:
        """Run the batch on both sides; raise DifferenceFound at the first disagreement."""
        try:
            out = self.board.exec(f"_fz_run(_fz_fn, {[bytes(p) for p in payloads]!r})", timeout=30)
        except BoardException as e:
            raise AssertionError(f"{self.function} crashed the board's REPL on {payloads!r}: {e}") from None
        lines = [line for line in out.splitlines() if line.startswith("(")]
        for payload, line in zip(payloads, lines):
            on_host = self._norm(outcome(self.reference, payload))
            on_board = self._read(line, on_host)
            self.compared += 1
            if on_board != on_host:
                raise DifferenceFound(payload, on_board, on_host, self.function)
        if len(lines) != len(payloads):
            raise AssertionError(f"{self.function}: {len(lines)} results for {len(payloads)} payloads; "
                                 f"board output:\n{out[-2000:]}")

    def run(self, strategy: st.SearchStrategy[bytes], examples: int = 100, seed: int | None = None,
            batch: int = 20, database: str | Path | None = None, progress_every: float = DEFAULT_EVERY_S) -> int:
        """Compare over `examples` batches of up to `batch` payloads; the number compared.
        Progress is reported every `progress_every` seconds (progress.py)."""
        # Failures are stored per board function and reference.
        key = f"harness.fuzz_diff:{self.function}:{json.dumps(getattr(self.reference, '__qualname__', ''))}"
        db = example_database(database, key)
        progress = Progress(f"differential {self.function} on {self.board.name}", "payloads", progress_every)

        @settings(max_examples=examples, database=db, deadline=None, print_blob=False,
                  suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
        @given(st.lists(strategy, min_size=1, max_size=batch))
        def differential(items: list[bytes]) -> None:
            status = "failing"
            try:
                self.compare(items)
                status = "passing"
            finally:
                progress.example(len(items), status)

        if seed is not None:
            differential = hyp_seed(seed)(differential)
        progress.start(f"up to {examples} examples of 1..{batch} payloads, "
                       + ("random seed" if seed is None else f"seed {seed}"))
        try:
            with statistics_of(progress.what):
                differential()
        except BaseException as e:
            progress.finish(e)
            raise
        progress.finish(None)
        return self.compared
