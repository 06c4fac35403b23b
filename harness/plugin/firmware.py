"""pytest fixtures that put a firmware on the board and point it at the test's broker:
`firmware` (the folder under test) and `start_firmware` (deploy, configure, run).

Options --wifi-ssid / --wifi-password (env HIL_WIFI_SSID / HIL_WIFI_PASSWORD) name the access
point a real board joins; the simulator needs none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from ..board.board import Board
from ..deploy.device_start import device_setup, device_tls, firmware_of, new_client_id, start_device
from ..deploy.firmware import Device, Firmware
from .options import options


@pytest.fixture
def firmware(request: pytest.FixtureRequest, firmware_dir: Path) -> Firmware:
    """The firmware under test (--firmware DIR, or the test's @pytest.mark.firmware)."""
    chosen = Firmware(firmware_dir)
    request.node.user_properties += [("hil firmware", str(chosen.path)), ("hil firmware sha256", chosen.digest())]
    return chosen


@pytest.fixture
def start_firmware(request: pytest.FixtureRequest, board: Board, broker: Any) -> Callable[..., Device]:
    """Deploy a firmware with its config files filled from this test's endpoints, and run it.

    start_firmware(client_id=None, via=None, cloud=None, extra=None, keepalive=30, files=None,
    topics=None, firmware=None) -> Device.
    - `files`: the firmware's own config files, board path -> template (config_files.py), on top
      of the manifest's "config_files"; /hil_config.json is written too, for firmware that reads it.
    - `topics`: the firmware's topic scheme, name -> template, on top of the manifest's "topics".
    - `firmware`: another firmware folder (a path, e.g. one built in tmp_path, or a Firmware).
    - `via`: something with .host/.port (a netfault proxy) the board dials instead of the broker;
      `cloud`: an HTTP endpoint with .url; `extra`: firmware settings (config "extra").
    On a TLS broker (--broker-tls) the board gets its CA and, under mutual TLS, a certificate
    and key of its own (made for its client id): in /hil_config.json's mqtt.tls and as the
    config templates' TLS placeholders (config_files.py).
    The Device names the client id and the topics: device.topic("telemetry").
    """
    wifi = options(request.config).wifi

    def start(client_id: str | None = None, via: Any = None, cloud: Any = None,
              extra: dict | None = None, keepalive: int = 30, files: dict[str, Any] | None = None,
              topics: dict[str, str] | None = None, firmware: str | Path | Firmware | None = None) -> Device:
        if firmware is None:  # the test's firmware (--firmware, the ini file, or its marker)
            chosen = request.getfixturevalue("firmware")
        else:
            chosen = firmware_of(firmware)
        cid = client_id or new_client_id(chosen.name)
        setup = device_setup(chosen, broker, cid, via=via, cloud=cloud, extra=extra, keepalive=keepalive,
                             files=files, topics=topics, wifi=wifi, tls=device_tls(broker, cid))
        # With the test's telemetry, messages from this device carry the board's clock.
        telemetry = request.getfixturevalue("telemetry") if "telemetry" in request.fixturenames else None
        return start_device(board, chosen, setup, telemetry=telemetry)

    return start
