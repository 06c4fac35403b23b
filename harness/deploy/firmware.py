"""A firmware folder: main.py, its package manifest, shared code it includes, its message schemas.

Layout the harness understands (all but main.py optional):

    main.py  boot.py  *.py  lib/         copied to the board as they are
    manifest.json    {"packages": ["umqtt.simple", ...],   micropython-lib packages -> lib/
                      "include": ["../common/lib", ...]}   host folders merged into lib/
    schemas/*.json   JSON Schema of each message format (telemetry checks, fuzzing); stays on the host
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import packages
from ..board.board import Board, DeployReport
from ..board.firmware_run import FirmwareRun
from ..errors import FirmwareError
from .. import tempdirs

HOST_ONLY = {"manifest.json", "schemas", "README.md"}


class Firmware:
    """One firmware folder, checked on construction (it must exist and hold main.py)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        if not self.path.is_dir():
            raise FirmwareError(f"firmware folder {self.path} does not exist")
        if not (self.path / "main.py").is_file():
            raise FirmwareError(f"firmware folder {self.path} has no main.py")
        self.name = self.path.name
        manifest = self.path / "manifest.json"
        self.manifest: dict[str, Any] = {}
        if manifest.exists():
            try:
                self.manifest = json.loads(manifest.read_text())
            except ValueError as e:
                raise FirmwareError(f"{manifest}: not valid JSON ({e})") from None
        self.packages: list[str] = packages.read_manifest(manifest) if manifest.exists() else []
        self.includes = [(self.path / inc).resolve() for inc in self.manifest.get("include", [])]
        for inc in self.includes:
            if not inc.is_dir():
                raise FirmwareError(f"{manifest}: include {inc} is not a folder")

    def schema(self, name: str) -> dict:
        """The JSON Schema of one message format (schemas/<name>.json)."""
        path = self.path / "schemas" / f"{name}.json"
        if not path.exists():
            known = sorted(p.stem for p in (self.path / "schemas").glob("*.json"))
            raise FirmwareError(f"firmware {self.name} has no schema {name!r} (known: {', '.join(known) or 'none'})")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise FirmwareError(f"schema file {path} is not valid JSON: line {e.lineno} column {e.colno}: "
                                f"{e.msg}") from None

    def stage(self, into: Path) -> Path:
        """The exact tree the board gets: the folder, included libs and packages under lib/."""
        for item in self.path.iterdir():
            if item.name in HOST_ONLY or item.name.startswith(".") or item.name == "__pycache__":
                continue
            if item.is_dir():
                shutil.copytree(item, into / item.name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(item, into / item.name)
        for inc in self.includes:
            shutil.copytree(inc, into / "lib", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if self.packages:
            packages.install(self.packages, into / "lib")
        return into

    def deploy(self, board: Board, config: dict | None = None) -> DeployReport:
        """Copy the firmware onto the board (unchanged files skipped), then its config file."""
        staging = tempdirs.make_temp_dir("stage")
        try:
            report = board.deploy(self.stage(staging))
        finally:
            tempdirs.remove(staging)
        if config is not None:
            from .device_config import CONFIG_FILE, dumps
            board.put_bytes(dumps(config).encode(), CONFIG_FILE)
        return report

    def start(self, board: Board, config: dict | None = None) -> FirmwareRun:
        """Deploy and run main.py in the background."""
        self.deploy(board, config)
        return board.run("main.py")

    def __repr__(self) -> str:
        return f"<Firmware {self.name}>"


@dataclass
class Device:
    """A firmware running on a board under an MQTT client id: what scenarios talk to."""

    board: Board
    firmware: Firmware
    run: FirmwareRun
    client_id: str
    prefix: str

    def topic(self, name: str) -> str:
        """One of the device's topics: device.topic("telemetry") -> "hil/weather-1/telemetry"."""
        return f"{self.prefix}/{name}"

    @property
    def console(self):
        return self.board.console
