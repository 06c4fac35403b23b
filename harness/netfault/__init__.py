"""Network faults between a board and its broker or HTTP endpoint: a TCP proxy whose latency,
bandwidth, cuts, blackholes, refusals and dropped or corrupted bytes a test switches on; and a
UDP proxy (MQTT-SN) whose loss, duplication, reordering, delay and silence it switches on;
docker boards on a network of their own (container_board.py: importing it wires the boards
open_board("docker:PROFILE") opens)."""

from .container_board import open_docker_board
from .proxy import Fault, FaultProxy, ProxyStats, Schedule
from .udp import UdpFault, UdpFaultProxy, UdpStats

__all__ = ["Fault", "FaultProxy", "ProxyStats", "Schedule", "UdpFault", "UdpFaultProxy", "UdpStats",
           "open_docker_board"]
