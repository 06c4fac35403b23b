"""pytest fixtures that put a firmware on the board and point it at the test's broker:
`firmware` (the folder under test) and `start_firmware` (deploy, configure, run).

Options --wifi-ssid / --wifi-password (env HIL_WIFI_SSID / HIL_WIFI_PASSWORD) name the access
point a real board joins; the simulator needs none.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable

import pytest

from ..board.board import Board
from ..deploy.device_config import build_config
from ..deploy.firmware import Device, Firmware
from .options import options

_ids = itertools.count(1)


@pytest.fixture
def firmware(firmware_dir: Path) -> Firmware:
    """The firmware under test (--firmware DIR, or the test's @pytest.mark.firmware)."""
    return Firmware(firmware_dir)


@pytest.fixture
def start_firmware(request: pytest.FixtureRequest, board: Board, firmware: Firmware,
                   broker: Any) -> Callable[..., Device]:
    """Deploy the firmware with a config naming this test's broker, and run it.

    start_firmware(client_id=None, via=None, cloud=None, extra=None, keepalive=30) -> Device.
    `via` is something with .host/.port (a netfault proxy) the board dials instead of the
    broker; `cloud` an HTTP endpoint with .url; `extra` firmware settings (config "extra").
    The Device names the client id and the topics: device.topic("telemetry").
    """
    wifi = options(request.config).wifi

    def start(client_id: str | None = None, via: Any = None, cloud: Any = None,
              extra: dict | None = None, keepalive: int = 30) -> Device:
        cid = client_id or f"{firmware.name.split('_')[0][:12]}-{next(_ids)}"
        prefix = f"hil/{cid}"
        target = via if via is not None else broker
        cfg = build_config(_Endpoint(target.host, target.port, getattr(broker, "credentials", None)), cid,
                           wifi=wifi, cloud_url=cloud.url if cloud is not None else None,
                           keepalive=keepalive, topic_prefix=prefix, extra=extra)
        if board.sim is not None and "telemetry" in request.fixturenames:
            # Messages from this device carry the board's clock (rates asserted in board time).
            request.getfixturevalue("telemetry").attach_board_clock(board.sim.publishes, cid)
        return Device(board, firmware, firmware.start(board, cfg), cid, prefix)

    return start


class _Endpoint:
    """Where the board connects: the broker itself or a proxy in front of it (same credentials)."""

    def __init__(self, host: str, port: int, credentials: Any):
        self.host, self.port, self.credentials = host, port, credentials
