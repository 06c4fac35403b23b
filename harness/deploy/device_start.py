"""Starting a firmware on a board, pointed at the test's broker: the one recipe behind every
board a test starts (`start_firmware`'s one board, the role boards of `boards`, a fleet's many).

    setup = device_setup(firmware, broker, client_id, extra={"interval_s": 60})
    device = start_device(board, firmware, setup, telemetry=telemetry)

`device_setup` renders what the board must be given: /hil_config.json (the harness's format)
and the firmware's own config files from their templates (deploy/config_files.py), filled with
where this test's broker (or a fault proxy in front of it: `via`), WiFi and cloud are.
`start_device` deploys the firmware with them and runs main.py; with `telemetry`, messages from
a simulated board carry its clock. A fleet writes the same files straight into each simulated
board's flash folder instead (fleet/fleet.py), which is the only difference.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..board.board import Board
from .config_files import Endpoints, render
from .device_config import build_config
from .firmware import Device, Firmware
from ..errors import HarnessError
from ..secret import secret

_ids = itertools.count(1)
MAX_CLIENT_ID = 23  # MQTT 3.1.1 promises client ids of 1..23 characters


def new_client_id(name: str, tag: str = "") -> str:
    """A client id unique in this process, readable in logs: the name's first word (of a
    firmware folder, a role), `tag`, a number: "weather-1", "switch-r2". Under pytest-xdist the
    worker's number follows ("switch-r2w1"): workers sharing one broker (--broker HOST:PORT)
    must not take each other's ids, or the broker would drop one board for the other."""
    word = re.sub(r"[^A-Za-z0-9-]", "", name.split("_")[0]) or "board"
    worker = re.sub(r"\D", "", os.environ.get("PYTEST_XDIST_WORKER", ""))
    number = f"-{tag}{next(_ids)}" + (f"w{worker}" if worker else "")
    return word[:MAX_CLIENT_ID - len(number)] + number


@dataclass(frozen=True)
class DeviceSetup:
    """What one board is given before its firmware starts: its client id and topic prefix,
    /hil_config.json (`config`) and its own config files (`files`: board path -> bytes)."""

    client_id: str
    prefix: str
    config: dict
    files: dict[str, bytes] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)  # the firmware's topic scheme

    def device(self, board: Board, firmware: Firmware, run: Any) -> Device:
        """The Device the test talks to once `run` runs the firmware on `board`."""
        return Device(board, firmware, run, self.client_id, self.prefix, topics=dict(self.topics))


class _Dial:
    """Where the board connects: the broker itself or a proxy in front of it (same credentials)."""

    def __init__(self, host: str, port: int, credentials: Any):
        self.host, self.port, self.credentials = host, port, credentials


def device_tls(broker: Any, client_id: str) -> Any:
    """What one board needs of a TLS broker (its CA and, under mutual TLS, a certificate for
    this client id; the name to verify is the broker's own, also through a proxy), or None for
    plain MQTT."""
    tls = getattr(broker, "tls", None)
    if tls is None:
        return None
    from .config_files import DeviceTls  # only a TLS broker gets here

    cert = tls.client_cert(client_id) if tls.mutual else None
    return DeviceTls(ca_cert=tls.ca_pem, server_name=broker.host,
                     client_cert=cert.cert_pem if cert else None, client_key=cert.key_pem if cert else None)


def device_setup(firmware: Firmware, broker: Any, client_id: str, *, via: Any = None, cloud: Any = None,
                 extra: dict | None = None, keepalive: int = 30, files: dict[str, Any] | None = None,
                 topics: dict[str, str] | None = None, wifi: tuple[str, Any] | None = None,
                 tls: Any = None, prefix: str | None = None) -> DeviceSetup:
    """Render one board's config for this test.

    - `broker`: has .host, .port and .credentials; `via`: something with .host/.port (a
      netfault proxy) the board dials instead; `cloud`: an HTTP endpoint with .url.
    - `extra`: firmware settings (config "extra", and template placeholders).
    - `files`: the firmware's own config files, board path -> template, on top of its
      manifest's "config_files"; `topics`: its topic scheme on top of the manifest's "topics".
    - `wifi`: (ssid, password) a real board joins; `tls`: device_tls(broker, client_id).
    """
    if not client_id or len(client_id) > MAX_CLIENT_ID:
        raise HarnessError(f"client id {client_id!r} must be 1 to {MAX_CLIENT_ID} characters")
    prefix = prefix if prefix is not None else f"hil/{client_id}"
    target = via if via is not None else broker
    user, password = getattr(broker, "credentials", None) or (None, None)
    with_tls = {"tls": tls} if tls is not None else {}
    endpoints = Endpoints(host=target.host, port=target.port, client_id=client_id, user=user,
                          password=secret(password), keepalive=keepalive, topic_prefix=prefix,
                          wifi_ssid=wifi[0] if wifi else None, wifi_password=wifi[1] if wifi else None,
                          cloud_url=cloud.url if cloud is not None else None, extra=dict(extra or {}),
                          **with_tls)
    config = build_config(_Dial(target.host, target.port, (user, password) if user else None), client_id,
                          wifi=wifi, cloud_url=endpoints.cloud_url, keepalive=keepalive,
                          topic_prefix=prefix, extra=extra, **with_tls)
    templates = {**firmware.config_files, **(files or {})}
    rendered = {name: render(name, template, endpoints) for name, template in templates.items()}
    return DeviceSetup(client_id, prefix, config, rendered, {**firmware.topics, **(topics or {})})


def start_device(board: Board, firmware: Firmware, setup: DeviceSetup, telemetry: Any = None) -> Device:
    """Deploy `firmware` with `setup`'s config files and run its main.py in the background.

    With `telemetry` (a Telemetry) and a simulated board, messages from this client id carry the
    board's clock (rates asserted in board time); on any board, the telemetry's waits fail at once
    with the firmware's traceback when it crashes."""
    if board.sim is not None and telemetry is not None:
        telemetry.attach_board_clock(board.sim, setup.client_id)
    run = firmware.start(board, setup.config, setup.files)
    device = setup.device(board, firmware, run)
    if telemetry is not None:  # a crash fails the test's waits for its messages at once
        telemetry.watch(run, device.prefix, [device.topic(name) for name in device.topics])
    return device


def firmware_of(path: str | Path | Firmware, base: Path | None = None) -> Firmware:
    """A Firmware from a folder (relative: to `base`) or a Firmware."""
    if isinstance(path, Firmware):
        return path
    folder = Path(path)
    if not folder.is_absolute() and base is not None:
        folder = base / folder
    return Firmware(folder)
