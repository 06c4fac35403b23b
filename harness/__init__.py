"""micropython_hil: hardware-in-the-loop tests of MicroPython IoT firmware, as a pytest plugin.

The public API. Tests usually need only the fixtures (board, sim, broker, telemetry,
start_firmware, netfault, cloud, bench, fuzzer); these names are for library use and helpers:

    from micropython_hil import Board, Simulator, AmqttBroker, Telemetry

Areas (subpackages, each importing only the ones below it): sim (the simulated ESP32's host
end), board (boards over one REPL layer), mqtt (brokers, telemetry, outage checks), cloud (an
HTTP endpoint), netfault (the TCP fault proxy), deploy (firmware folders, device config,
packages), bench (hot-loop timing) and fuzz (message fuzzing), plugin (the pytest glue).
bench and fuzz load when first used, so importing the package does not import hypothesis.
"""

from __future__ import annotations

import importlib
from typing import Any

from .board.board import Board, DeployReport, open_board
from .board.console import Console
from .board.firmware_run import FirmwareRun
from .board.server import BoardServer
from .board.spec import BoardSpec
from .board.unix_board import UnixBoard
from .board.serial_board import SerialBoard
from .board.sim_process import SimProcess
from .board.unix_port import find_micropython
from .cloud import Cloud, Reply, Request
from .deploy import CONFIG_FILE, Device, Firmware, build_config, packages
from .errors import (BenchBudgetExceeded, BenchError, BoardConnectionError, BoardCrashed, BoardError,
                     BoardException, BoardMemoryError, BoardRebooted, BoardTimeout, BrokerError, CheckFailed,
                     CloudError, DifferenceFound, FirmwareError, FuzzBadReply, FuzzCrash, FuzzFailure, FuzzHang,
                     FuzzWrongReply, HarnessError, HarnessWarning, MicroPythonNotFound, MqttError, NetFaultError, PackageError,
                     ProfileError, SimulatorError, SyncTimeout, TelemetryError)
from .mqtt.broker import AmqttBroker, Broker, ExternalBroker, MosquittoBroker, make_broker
from .mqtt.client import MqttClient
from .mqtt.outage import Outage
from .mqtt.telemetry import Message, Telemetry, topic_matches
from .mqtt.docker_broker import DockerBroker
from .mqttsn import Gateway, SnClient
from .netfault.proxy import Fault, FaultProxy, ProxyStats, Schedule
from .netfault.udp import UdpFaultProxy
from .secret import Secret
from .sim.inputs import Signal
from .sim.profiles import Profile, known_profiles, load_profile
from .sim.simulator import TIME_MODES, Simulator

# Loaded on first use (hypothesis is slow to import and only fuzzing needs it).
_LAZY = {
    "Boards": "fleet", "Fleet": "fleet", "FleetBoard": "fleet", "Role": "fleet", "Sync": "fleet",
    "BenchResult": "bench", "Calibration": "bench", "analyse": "bench", "calibrate": "bench",
    "latency": "bench", "probe": "bench",
    "Fuzzer": "fuzz", "Contract": "fuzz", "Differential": "fuzz", "RelayModel": "fuzz", "payloads": "fuzz",
}

__all__ = [
    # boards
    "Board", "BoardServer", "BoardSpec", "Console", "DeployReport", "FirmwareRun", "SerialBoard", "SimProcess",
    "UnixBoard", "find_micropython", "open_board",
    # the simulated ESP32
    "Profile", "Signal", "Simulator", "TIME_MODES", "known_profiles", "load_profile",
    # brokers, telemetry, the HTTP cloud, faults
    "AmqttBroker", "Broker", "Cloud", "DockerBroker", "ExternalBroker", "Fault", "FaultProxy", "Gateway",
    "Message", "MosquittoBroker", "MqttClient", "Outage", "ProxyStats", "Reply", "Request", "Schedule",
    "SnClient", "Telemetry", "UdpFaultProxy", "make_broker", "topic_matches",
    # firmware on the board
    "CONFIG_FILE", "Device", "Firmware", "build_config", "packages",
    # secrets
    "Secret",
    # errors: the harness could not do it ...
    "HarnessError", "BenchError", "BoardConnectionError", "BoardCrashed", "BoardError", "BoardException",
    "BoardMemoryError", "BoardRebooted", "BoardTimeout", "BrokerError", "CloudError", "FirmwareError",
    "MicroPythonNotFound", "MqttError", "NetFaultError", "PackageError", "ProfileError", "SimulatorError",
    # ... or stepped in and went on
    "HarnessWarning",
    # ... or the firmware failed a check
    "CheckFailed", "BenchBudgetExceeded", "DifferenceFound", "FuzzBadReply", "FuzzCrash", "FuzzFailure",
    "FuzzHang", "FuzzWrongReply", "SyncTimeout", "TelemetryError",
    # loaded on first use
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    area = _LAZY.get(name)
    if area is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{area}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
