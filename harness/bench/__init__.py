"""Hot-loop benchmarks on the device: the probe, the ESP32 estimate, end-to-end latency, their
statistics and the run reports."""

from .calibration import calibrate
from .latency import latency
from .probe import ProbeRun, analyse, probe
from .result import BenchResult, Calibration, board_id
from .stats import Comparison, Stats, compare, summarize

__all__ = ["BenchResult", "Calibration", "Comparison", "ProbeRun", "Stats", "analyse", "board_id",
           "calibrate", "compare", "latency", "probe", "summarize"]
