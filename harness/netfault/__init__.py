"""Network faults between a board and its broker or HTTP endpoint: a TCP proxy whose latency,
bandwidth, cuts, blackholes, refusals and dropped or corrupted bytes a test switches on."""

from .proxy import Fault, FaultProxy, ProxyStats, Schedule

__all__ = ["Fault", "FaultProxy", "ProxyStats", "Schedule"]
