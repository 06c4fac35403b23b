"""Statistics of hot-loop timings, on the host: summaries, probe-overhead subtraction and the
baseline comparison that tells a regression from the noise of two runs.

Board clocks are coarse (ticks_us counts whole microseconds), and a step of a few microseconds
lands on one of two or three clock values. Percentiles here therefore treat each sample as
spread over one clock tick (the grouped-data interpolation of a histogram), so a median moves
smoothly as the true time moves instead of jumping by a whole tick; with a fine clock
(ticks_cpu) this is the ordinary order statistic.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from dataclasses import asdict, dataclass
from typing import Sequence

BLOCKS = 10          # a run is cut into this many consecutive blocks for the comparison
CONFIDENCE = 0.99    # of the bootstrap interval of the difference of medians
RESAMPLES = 4000


def quantile(ordered: Sequence[float], q: float, tick: float = 0.0) -> float:
    """The q-quantile (0..1) of sorted values; `tick` is the clock resolution the values were
    quantized to (each value then stands for an interval one tick wide around it)."""
    n = len(ordered)
    if n == 0:
        raise ValueError("quantile of no samples")
    pos = min(max(q, 0.0), 1.0) * n
    k = min(int(pos), n - 1)
    v = ordered[k]
    if tick <= 0:
        return float(v)
    lo, hi = bisect_left(ordered, v), bisect_right(ordered, v)
    return v - tick / 2 + tick * (pos - lo) / (hi - lo)


def trimmed_mean(values: Sequence[float], trim: float = 0.01) -> float:
    """Mean without the highest `trim` share (interrupts, scheduler preemption). With a clock
    read at a random phase, the mean of quantized durations is an unbiased estimate of the true
    duration even when it is below one tick: why the probe overhead uses it."""
    ordered = sorted(values)
    keep = ordered[:max(1, len(ordered) - int(len(ordered) * trim))]
    return sum(keep) / len(keep)


@dataclass(frozen=True)
class Stats:
    """Summary of durations in microseconds. jitter: mean absolute difference between
    consecutive iterations (how much one pass differs from the next, as RFC 3550 uses it)."""

    n: int
    min: float
    median: float
    mean: float
    p95: float
    p99: float
    max: float
    stdev: float
    jitter: float

    LOCATION = ("min", "median", "mean", "p95", "p99", "max")

    def minus(self, overhead: float) -> "Stats":
        """These stats with a constant cost (the probe's) taken off every location statistic;
        spread statistics (stdev, jitter) are unchanged by a constant. Clamped at zero."""
        moved = {k: max(0.0, getattr(self, k) - overhead) for k in self.LOCATION}
        return Stats(n=self.n, stdev=self.stdev, jitter=self.jitter, **moved)

    def get(self, name: str) -> float:
        if name not in self.LOCATION + ("stdev", "jitter"):
            raise ValueError(f"unknown statistic {name!r}: use one of "
                             f"{', '.join(self.LOCATION + ('stdev', 'jitter'))}")
        return getattr(self, name)

    def to_dict(self, digits: int = 3) -> dict:
        return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(values_us: Sequence[float], tick_us: float = 0.0) -> Stats:
    """min, median, mean, p95, p99, max, stdev, jitter of durations (in time order)."""
    n = len(values_us)
    if n == 0:
        raise ValueError("no samples to summarize")
    ordered = sorted(values_us)
    mean = sum(ordered) / n
    stdev = math.sqrt(sum((v - mean) ** 2 for v in ordered) / (n - 1)) if n > 1 else 0.0
    jitter = sum(abs(b - a) for a, b in zip(values_us, values_us[1:])) / (n - 1) if n > 1 else 0.0
    return Stats(n=n, min=float(ordered[0]), median=quantile(ordered, 0.5, tick_us), mean=mean,
                 p95=quantile(ordered, 0.95, tick_us), p99=quantile(ordered, 0.99, tick_us),
                 max=float(ordered[-1]), stdev=stdev, jitter=jitter)


def block_medians(values_us: Sequence[float], tick_us: float = 0.0, blocks: int = BLOCKS) -> list[float]:
    """Medians of `blocks` consecutive slices of a run: their spread is the run's own noise at
    the time scale of drift (caches, frequency, the host's other work), not only sample noise."""
    n = len(values_us)
    blocks = max(1, min(blocks, n // 5 or 1))
    out = []
    for b in range(blocks):
        part = sorted(values_us[b * n // blocks:(b + 1) * n // blocks])
        out.append(quantile(part, 0.5, tick_us))
    return out


@dataclass(frozen=True)
class Comparison:
    """Current run against a baseline: difference of medians (us) with its confidence interval."""

    baseline_median: float
    current_median: float
    delta: float
    ci_low: float
    ci_high: float
    confidence: float

    @property
    def regressed(self) -> bool:
        """Slower beyond the noise of both runs: the whole interval lies above zero."""
        return self.ci_low > 0

    @property
    def improved(self) -> bool:
        return self.ci_high < 0

    @property
    def ratio(self) -> float:
        return self.current_median / self.baseline_median if self.baseline_median else math.inf

    def describe(self, unit: str = "us") -> str:
        verdict = "regressed" if self.regressed else "improved" if self.improved else "within noise"
        return (f"median {self.baseline_median:.2f} -> {self.current_median:.2f} {unit} "
                f"({self.ratio:.2f}x), difference {self.delta:+.2f}, "
                f"{self.confidence:.0%} CI [{self.ci_low:+.2f}, {self.ci_high:+.2f}]: {verdict}")


def compare(baseline_blocks: Sequence[float], current_blocks: Sequence[float],
            confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 1) -> Comparison:
    """Bootstrap interval of mean(current block medians) - mean(baseline block medians).

    Resampling the blocks of each run independently puts both runs' noise into the interval;
    a regression is an interval entirely above zero. Seeded: the same data, the same verdict."""
    if not baseline_blocks or not current_blocks:
        raise ValueError("compare needs block medians from both runs")
    rng = random.Random(seed)
    nb, nc = len(baseline_blocks), len(current_blocks)
    diffs = sorted(sum(rng.choices(current_blocks, k=nc)) / nc - sum(rng.choices(baseline_blocks, k=nb)) / nb
                   for _ in range(resamples))
    alpha = (1 - confidence) / 2
    base, cur = sum(baseline_blocks) / nb, sum(current_blocks) / nc
    return Comparison(baseline_median=base, current_median=cur, delta=cur - base,
                      ci_low=quantile(diffs, alpha), ci_high=quantile(diffs, 1 - alpha), confidence=confidence)


def histogram(values: Sequence[float], bins: int = 40, include: float | None = None) -> tuple[list[float], list[int], int]:
    """Bin edges and counts from the minimum to twice the distance to the p99 (or the maximum,
    if lower); samples beyond are counted apart (returned third), so one preempted call does
    not squash the picture. `include` (a budget) widens the range to show it if it is near."""
    ordered = sorted(values)
    lo = ordered[0]
    hi = min(ordered[-1], lo + 2 * (quantile(ordered, 0.99) - lo))
    if include is not None and hi < include <= lo + 2 * (hi - lo):
        hi = include * 1.02
    if hi <= lo:
        hi = lo + 1.0
    width = (hi - lo) / bins
    counts = [0] * bins
    beyond = 0
    for v in ordered:
        if v > hi:
            beyond += 1
        else:
            counts[min(int((v - lo) / width), bins - 1)] += 1
    return [lo + i * width for i in range(bins + 1)], counts, beyond


def coefficient_of_variation(values: Sequence[float]) -> float:
    """stdev / mean (sample stdev): run-to-run repeatability of a statistic."""
    n = len(values)
    mean = sum(values) / n
    if n < 2 or mean == 0:
        return 0.0
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / mean
