"""The records of a benchmark: one result, the calibration it was scaled by, the board it ran on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .stats import Stats


@dataclass
class BenchResult:
    """One benchmark: raw and overhead-corrected statistics, allocation, and verdict inputs."""

    name: str
    target: str
    board: str
    board_id: str
    raw: Stats                       # as timed, probe overhead included
    stats: Stats                     # probe overhead subtracted from every location statistic
    overhead_us: float
    tick_us: float
    alloc_median: float              # bytes per call
    alloc_max: int
    gc_collections: int              # calls during which a collection ran
    blocks: list[float]              # block medians in reference-kernel units, for baselines
    durations_us: list[float] = field(repr=False, default_factory=list)
    kind: str = "hot_loop"           # or "latency"
    gc: str = "collect"
    wall_s: float = 0.0
    scale: "Calibration | None" = None
    estimate: Stats | None = None    # stats scaled to the reference chip (unix boards only)
    budget: dict = field(default_factory=dict)
    comparison: Any = None
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Calibration:
    """How fast the board runs pystone against the reference chip: factor = ref time / board time."""

    board: str
    board_id: str
    pystones: float           # measured on this board
    reference: str            # the chip the estimate is for
    reference_pystones: float
    factor: float             # multiply this board's times by it to estimate the reference's

    def describe(self) -> str:
        if self.factor == 1.0:
            return f"{self.board}: {self.pystones:.0f} pystones/s (measured on the chip itself)"
        return (f"{self.board}: {self.pystones:.0f} pystones/s; {self.reference} estimated at "
                f"{self.reference_pystones:.0f} pystones/s -> times x{self.factor:.1f} "
                f"(estimate: assumes linear CPU-clock scaling and pystone-like code)")


def board_id(board: Any, platform: str = "") -> str:
    """What must match between a baseline and a run: board kind, platform and simulated profile."""
    sim = getattr(board, "sim", None)
    profile = sim.profile.name if sim is not None else "hardware"
    return f"{getattr(board, 'kind', 'board')}:{platform or '?'}:{profile}"
