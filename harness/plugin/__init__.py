"""The pytest plugin (entry point `micropython_hil.plugin`): hooks only.

Options live in options.py (parsed once into config.stash); each area's fixtures live in its own
module here (board, sim, mqtt, netfault, firmware, bench, fuzz) and are re-exported below, since
pytest collects fixtures from the plugin module's namespace.
"""

from __future__ import annotations

import signal
import threading

import pytest

from .. import tempdirs
# Aliased: the fixtures re-exported below include ones named `board` and `bench`.
from . import bench as bench_area, board as board_area, firmware as firmware_area, fuzz as fuzz_area
from . import mqtt as mqtt_area, netfault as netfault_area, sim as sim_area
from . import fleet as fleet_area, roles as roles_area
from . import mqttsn as mqttsn_area
from . import docker as docker_area, netns as netns_area
from .mutate import pytest_cmdline_main  # noqa: F401  a hook: --hil-mutate, and hil mutate's child runs
from .artifacts import ArtifactHooks, folder_of
from .options import add_options, parse_options

_FIXTURE_MODULES = (board_area, sim_area, mqtt_area, netfault_area, mqttsn_area, firmware_area, bench_area,
                    fuzz_area, docker_area, netns_area,
                    roles_area, fleet_area)
for _module in _FIXTURE_MODULES:
    globals().update({name: value for name, value in vars(_module).items()
                      if hasattr(value, "_fixture_function_marker") or hasattr(value, "_pytestfixturefunction")})

MARKERS = [*board_area.MARKERS, *roles_area.MARKERS, *bench_area.MARKERS, *fuzz_area.MARKERS]


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    parse_options(config)
    bench_area.configure(config)
    if not config.pluginmanager.has_plugin("micropython-hil-artifacts"):
        config.pluginmanager.register(ArtifactHooks(), "micropython-hil-artifacts")
    tempdirs.remove_stale()  # what a killed run left: its boards' flash, its broker's config
    _teardown_on_sigterm()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _teardown_on_sigterm() -> None:
    """SIGTERM (a CI job cancelled, `kill PID`) ends the session the way Ctrl-C does, so every
    fixture's teardown runs: boards, brokers and temp folders are released. Python's default
    for SIGTERM ends the process at once, with no teardown."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)


def pytest_runtest_setup(item: pytest.Item) -> None:
    board_area.skip_by_marker(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    yield
    # After the whole test (its fixtures may fuzz too), before the teardown report, where
    # hypothesis's plugin picks a test's statistics up.
    fuzz_area.report_statistics(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.failed:  # once, in the phase that failed: the board's side of the story
        console = board_area.console_of(item)
        if console:
            report.sections.append(("board console", console[-20000:]))
        folder = folder_of(item.config, item.nodeid)
        if folder.is_dir():
            report.sections.append(("hil artifacts", str(folder)))
