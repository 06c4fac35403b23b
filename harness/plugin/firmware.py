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
from ..deploy.config_files import DeviceTls, Endpoints, render
from ..deploy.firmware import Device, Firmware
from ..secret import secret
from .options import options

_ids = itertools.count(1)


@pytest.fixture
def firmware(firmware_dir: Path) -> Firmware:
    """The firmware under test (--firmware DIR, or the test's @pytest.mark.firmware)."""
    return Firmware(firmware_dir)


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
            chosen = firmware if isinstance(firmware, Firmware) else Firmware(firmware)
        cid = client_id or f"{chosen.name.split('_')[0][:12]}-{next(_ids)}"
        prefix = f"hil/{cid}"
        target = via if via is not None else broker
        user, password = getattr(broker, "credentials", None) or (None, None)
        tls = _device_tls(broker, cid)
        endpoints = Endpoints(host=target.host, port=target.port, client_id=cid, user=user,
                              password=secret(password), keepalive=keepalive, topic_prefix=prefix,
                              wifi_ssid=wifi[0] if wifi else None, wifi_password=wifi[1] if wifi else None,
                              cloud_url=cloud.url if cloud is not None else None, extra=dict(extra or {}),
                              tls=tls)
        cfg = build_config(_Endpoint(target.host, target.port, (user, password) if user else None), cid,
                           wifi=wifi, cloud_url=endpoints.cloud_url, keepalive=keepalive,
                           topic_prefix=prefix, extra=extra, tls=tls)
        templates = {**chosen.config_files, **(files or {})}
        rendered = {name: render(name, template, endpoints) for name, template in templates.items()}
        if board.sim is not None and "telemetry" in request.fixturenames:
            # Messages from this device carry the board's clock (rates asserted in board time).
            request.getfixturevalue("telemetry").attach_board_clock(board.sim, cid)
        return Device(board, chosen, chosen.start(board, cfg, rendered), cid, prefix,
                      topics={**chosen.topics, **(topics or {})})

    return start


def _device_tls(broker: Any, client_id: str) -> DeviceTls | None:
    """The broker's TLS as one board needs it: its CA and, under mutual TLS, a certificate for
    this client id. The name to verify is the broker's own, also when the board dials a proxy."""
    tls = getattr(broker, "tls", None)
    if tls is None:
        return None
    cert = tls.client_cert(client_id) if tls.mutual else None
    return DeviceTls(ca_cert=tls.ca_pem, server_name=broker.host,
                     client_cert=cert.cert_pem if cert else None, client_key=cert.key_pem if cert else None)


class _Endpoint:
    """Where the board connects: the broker itself or a proxy in front of it (same credentials)."""

    def __init__(self, host: str, port: int, credentials: Any):
        self.host, self.port, self.credentials = host, port, credentials
