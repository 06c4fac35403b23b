"""Results of earlier runs, so an unchanged mutant is not run again.

A result is stored under the digest of the mutant's source: the mutated file's text, its name
and the firmwares it was run in. An edit of that file makes new keys for its mutants; an edit of
another file does not (run with --no-cache after changing how the files work together). With a
result go two digests of the tests: of the whole suite, and of the file of the test that killed
it. A stored result is used again when

  - the suite is unchanged (any status), or
  - it was killed and the killing test's file (and the conftest files) are unchanged: the same
    test fails on the same source. Strengthening other tests reruns only the survivors.

The file is JSON (`.hil-mutate/cache.json` by default), written atomically after each result.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from .result import KILLED, SURVIVED, TIMEOUT

VERSION = 1


class ResultCache:
    """A JSON file of results by source digest; `None` path: a cache that forgets."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            try:
                doc = json.loads(self.path.read_text())
            except ValueError:
                doc = {}  # a cache is a convenience: a broken one is started afresh
            if isinstance(doc, dict) and doc.get("version") == VERSION and isinstance(doc.get("results"), dict):
                self._entries = doc["results"]

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str, suite: str, killer_digest: Any) -> dict[str, Any] | None:
        """The stored result for `key` if it still holds for these tests, else None.

        `killer_digest(node_id)`: the current digest of that test's file, or None if the test is
        no longer selected."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry.get("status") not in (KILLED, TIMEOUT, SURVIVED):
            return None
        if entry.get("suite") == suite:
            return entry
        if entry["status"] == KILLED and entry.get("killer"):
            current = killer_digest(entry["killer"])
            if current is not None and current == entry.get("killer_digest"):
                return entry
        return None

    def store(self, key: str, entry: dict[str, Any]) -> None:
        with self._lock:
            self._entries[key] = entry
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": VERSION, "results": self._entries}, indent=0, sort_keys=True))
        os.replace(tmp, self.path)
