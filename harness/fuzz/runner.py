"""How the fuzzers run hypothesis, through its public API: the settings of a run, its seed, and
an example database of its own, so a failure found once is replayed first the next time.

hypothesis keys stored failures by the test function's source, which every firmware (or every
differential function) shares here; each key therefore gets its own database folder.

Each run's statistics go to progress.deliver_statistics (for --hypothesis-show-statistics): a
run here is a `@given` inside a plain test, which hypothesis's pytest plugin does not watch.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Callable, Iterator

from hypothesis import HealthCheck, Phase, given, seed as hyp_seed, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase
# Where hypothesis hands a finished run's statistics (its pytest plugin listens there around a
# @given test) and how it words them for --hypothesis-show-statistics.
from hypothesis.statistics import collector, describe_statistics

from .progress import deliver_statistics


def example_database(directory: str | Path | None, key: str) -> ExampleDatabase | None:
    """The failures stored for `key` under `directory` (a subfolder named by the key's hash);
    None without a directory."""
    if directory is None:
        return None
    return DirectoryBasedExampleDatabase(str(Path(directory) / hashlib.sha256(key.encode()).hexdigest()[:16]))


@contextlib.contextmanager
def statistics_of(what: str) -> Iterator[None]:
    """Deliver the statistics of the hypothesis runs inside (`what` names them) to progress.py,
    failed runs included: hypothesis reports them before it raises the failure."""
    with collector.with_value(lambda stats: deliver_statistics(what, describe_statistics(stats))):
        yield


def run_property(test: Callable[[st.DataObject], None], *, examples: int, seed: int | None,
                 database: str | Path | None, key: str, shrink: bool = True, what: str = "fuzz run") -> None:
    """Run `test(data)` on `examples` test cases, drawing through `data`; raise its (shrunk)
    failure. Failures stored for `key` under `database` are replayed first, seeded or not;
    the same seed draws the same test cases. Its statistics are delivered as `what`."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if shrink else [])
    prop = given(st.data())(test)
    if seed is not None:
        prop = hyp_seed(seed)(prop)
    # Applied after @seed, which also turns the database off: a seeded run still replays and
    # stores failures.
    prop = settings(max_examples=examples, database=example_database(database, key), deadline=None,
                    phases=phases, derandomize=False, suppress_health_check=list(HealthCheck),
                    print_blob=False)(prop)
    with statistics_of(what):
        prop()
