"""A firmware folder: main.py, its manifest, shared code it includes, its message schemas.

Layout the harness understands (all but main.py optional):

    main.py  boot.py  *.py  lib/         copied to the board as they are
    manifest.json                        read each time the firmware is deployed:
      "packages": ["umqtt.simple", ...]      MicroPython packages -> lib/ (see packages.py)
      "include": ["../common/lib", ...]      host folders merged into lib/
      "config_files": {"station.json": {...}, "secrets.py": "..."}
                                             the firmware's own config files, as templates
                                             filled from the test's endpoints (config_files.py)
      "topics": {"reading": "stations/{client_id}/reading", ...}
                                             the firmware's topic scheme (Device.topic)
      "wiring": {"sensors": {"bme280@0x76": {"temperature": 20.0}}, "adc": {"34": 1.9}}
                                             what the bench has attached, for a simulated board
    schemas/*.json   JSON Schema of each message format (telemetry checks, fuzzing); stays on the host
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import packages
from .device_config import CONFIG_FILE, dumps
from ..board.board import Board, DeployReport
from ..board.firmware_run import FirmwareRun
from ..errors import FirmwareError
from ..sim.wiring import apply_wiring
from .. import tempdirs

# Resolved package versions and hashes, kept beside manifest.json (commit it: reruns install
# exactly these, offline).
LOCK_FILE = "packages.lock.json"

HOST_ONLY = {"manifest.json", LOCK_FILE, "schemas", "README.md"}


class Firmware:
    """One firmware folder, checked on construction (it must exist and hold main.py); its
    manifest is read again at each deploy, so a test that edits it is taken at its word."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        if not self.path.is_dir():
            raise FirmwareError(f"firmware folder {self.path} does not exist")
        if not (self.path / "main.py").is_file():
            raise FirmwareError(f"firmware folder {self.path} has no main.py")
        self.name = self.path.name
        # Read and check the manifest now, so its errors show before a board is opened.
        self.includes

    @property
    def manifest(self) -> dict[str, Any]:
        """manifest.json as it is now ({} when there is none)."""
        path = self.path / "manifest.json"
        if not path.exists():
            return {}
        try:
            manifest = json.loads(path.read_text())
        except ValueError as e:
            raise FirmwareError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(manifest, dict):
            raise FirmwareError(f"{path}: must hold a JSON object")
        for key, kind in (("config_files", dict), ("topics", dict), ("wiring", dict), ("include", list),
                          ("packages", list)):
            if not isinstance(manifest.get(key, kind()), kind):
                raise FirmwareError(f"{path}: {key!r} must be a JSON {'object' if kind is dict else 'array'}")
        return manifest

    @property
    def packages(self) -> list[str]:
        """The MicroPython packages the manifest declares."""
        path = self.path / "manifest.json"
        return packages.read_manifest(path) if path.exists() else []

    @property
    def includes(self) -> list[Path]:
        """Host folders merged into the board's lib/."""
        found = [(self.path / inc).resolve() for inc in self.manifest.get("include", [])]
        for inc in found:
            if not inc.is_dir():
                raise FirmwareError(f"{self.path / 'manifest.json'}: include {inc} is not a folder")
        return found

    @property
    def config_files(self) -> dict[str, Any]:
        """Templates of the firmware's own config files (see config_files.py)."""
        return dict(self.manifest.get("config_files", {}))

    @property
    def topics(self) -> dict[str, str]:
        """Templates of the firmware's topics: name -> "stations/{client_id}/reading"."""
        return dict(self.manifest.get("topics", {}))

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
        named = [spec for spec in self.packages if not _is_path(spec)]
        for spec in self.packages:
            if _is_path(spec):
                self._copy_local_package(spec, into / "lib")
        if named:
            packages.install(named, into / "lib", lock=self.path / LOCK_FILE)
        return into

    def _copy_local_package(self, spec: str, lib: Path) -> None:
        """A package given as a path in the manifest: a module file or a package folder."""
        source = (self.path / spec).resolve()
        lib.mkdir(parents=True, exist_ok=True)
        if source.is_file():
            shutil.copy2(source, lib / source.name)
        elif source.is_dir():
            shutil.copytree(source, lib / source.name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            raise FirmwareError(f"{self.path / 'manifest.json'}: package {spec} is not a file or folder")

    def digest(self) -> str:
        """sha256 over the folder's files (paths and contents): which firmware a report was made on."""
        digest = hashlib.sha256()
        for path in sorted(p for p in self.path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(path.relative_to(self.path).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()

    @property
    def wiring(self) -> dict[str, Any]:
        """What the firmware's bench has attached (sensors and their values, ADC inputs)."""
        return dict(self.manifest.get("wiring", {}))

    def wire(self, sim: Any) -> None:
        """Attach the manifest's wiring to a simulator: a bench as the firmware expects it, so
        `hil run` (and a test) starts from a board that has its sensors."""
        apply_wiring(sim, self.wiring, where=f"{self.path / 'manifest.json'}: wiring")

    def deploy(self, board: Board, config: dict | None = None,
               files: dict[str, bytes] | None = None) -> DeployReport:
        """Copy the firmware onto the board (unchanged files skipped), then its config files:
        `config` as /hil_config.json, and each of `files` (board path -> content)."""
        staging = tempdirs.make_temp_dir("stage")
        try:
            report = board.deploy(self.stage(staging))
        finally:
            tempdirs.remove(staging)
        if config is not None:
            board.put_bytes(dumps(config).encode(), CONFIG_FILE)
        for name, content in (files or {}).items():
            parent = str(PurePosixPath(name.strip("/")).parent)
            if parent not in ("", "."):
                board.mkdir(parent)
            board.put_bytes(content, name)
        return report

    def start(self, board: Board, config: dict | None = None, files: dict[str, bytes] | None = None) -> FirmwareRun:
        """Deploy and run main.py in the background."""
        self.deploy(board, config, files)
        return board.run("main.py")

    def __repr__(self) -> str:
        return f"<Firmware {self.name}>"


def _is_path(spec: str) -> bool:
    return spec.startswith((".", "/"))


@dataclass
class Device:
    """A firmware running on a board under an MQTT client id: what scenarios talk to."""

    board: Board
    firmware: Firmware
    run: FirmwareRun
    client_id: str
    prefix: str
    topics: dict[str, str] = field(default_factory=dict)  # the firmware's own topic scheme

    def topic(self, name: str) -> str:
        """One of the device's topics: its template from the firmware's topic scheme
        ("stations/{client_id}/reading"), else "<prefix>/<name>" ("hil/weather-1/telemetry")."""
        template = self.topics.get(name)
        if template is None:
            return f"{self.prefix}/{name}"
        try:
            return template.format(client_id=self.client_id, prefix=self.prefix, name=name)
        except (KeyError, IndexError, ValueError) as e:
            raise FirmwareError(f"topic {name!r} = {template!r}: unknown placeholder {e}; use {{client_id}}, "
                                "{prefix} or {name}") from None

    @property
    def console(self):
        return self.board.console
