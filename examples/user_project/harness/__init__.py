"""The team's own helpers (named `harness`, as test helpers often are)."""
