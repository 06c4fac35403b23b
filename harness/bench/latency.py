"""End-to-end latency: from a stimulus the test applies to the message it causes at the broker."""

from __future__ import annotations

import time
from typing import Any, Callable

from .result import BenchResult, board_id
from .stats import block_medians, summarize
from ..errors import BenchError


def latency(stimulus: Callable[[int], None], telemetry: Any, topic: str, *, where: Any = None,
            where_each: Callable[[int], Any] | None = None, repetitions: int = 30, timeout: float = 5.0, run: Any = None,
            name: str = "latency", board: Any = None) -> BenchResult:
    """End-to-end latency: call stimulus(i) (e.g. sim.adc(36).set(...)) and time until the next
    message on `topic` (matching `where`, or where_each(i)) reaches the broker, `repetitions` times. Host clock,
    so it includes the simulator's channel, the firmware's loop, MQTT and the broker."""
    samples: list[float] = []
    for i in range(repetitions):
        mark = telemetry.mark()
        t0 = time.time()
        stimulus(i)
        try:
            message = telemetry.expect(topic, where=where_each(i) if where_each else where,
                                       timeout=timeout, since=mark)
        except AssertionError:
            if run is not None and not run.running:
                why = f"{type(run.error).__name__}: {str(run.error).splitlines()[0]}" if run.error else "it returned"
                raise BenchError(f"{getattr(board, 'name', 'board')}: the firmware stopped during latency "
                                 f"repetition {i + 1} ({why})") from None
            raise BenchError(f"no message on {topic} within {timeout} s after stimulus {i + 1} "
                             f"(of {repetitions}); is the input change one the firmware reports?") from None
        samples.append(max(0.0, (message.arrival - t0) * 1e6))
    stats = summarize(samples)
    platform = "linux" if getattr(board, "kind", "") in ("unix", "docker") else "device"  # the unix port
    bid = board_id(board, platform) if board is not None else "host"
    return BenchResult(name=name, target=f"{topic} after stimulus", board=getattr(board, "name", "host"),
                       board_id=bid, raw=stats, stats=stats, overhead_us=0.0, tick_us=0.0,
                       alloc_median=0.0, alloc_max=0, gc_collections=0,
                       blocks=block_medians(samples, 0.0, blocks=max(2, min(10, repetitions // 3))),
                       durations_us=samples, kind="latency", wall_s=0.0)
