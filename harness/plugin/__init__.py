"""pytest glue only: options, markers, fixtures and report sections of the MicroPython HIL harness.

The logic lives in the modules imported here; each area keeps its fixtures in fixtures_*.py.
"""

from __future__ import annotations

import pytest

from . import bench as fixtures_bench, board as fixtures_board, firmware as fixtures_firmware, \
    fuzz as fixtures_fuzz, mqtt as fixtures_mqtt, netfault as fixtures_netfault, sim as fixtures_sim
from .board import board, firmware_dir, hil_artifacts, _module_board  # noqa: F401  (fixtures)

# The other areas: each offers add_options(parser), its fixtures, maybe MARKERS and configure().
_area_modules = [fixtures_sim, fixtures_mqtt, fixtures_netfault, fixtures_firmware, fixtures_bench, fixtures_fuzz]
for _module in _area_modules:
    # Re-export the area's fixtures: pytest finds fixtures in a plugin module's namespace.
    globals().update({k: v for k, v in vars(_module).items()
                      if hasattr(v, "_fixture_function_marker") or hasattr(v, "_pytestfixturefunction")})

MARKERS = [
    "board(kind): run only on this kind of board (unix or serial)",
    "requires_hardware: needs a real board (--board serial:PORT)",
    "requires_sim: needs the simulator (--board unix)",
    "firmware(path): the firmware folder this test deploys, unless --firmware overrides it",
    "sim(time=, profile=, **options): how the simulated board runs this test (time: real|fast|stepped)",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    fixtures_board.add_options(parser)
    for module in _area_modules:
        if hasattr(module, "add_options"):
            module.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    fixtures_board.ensure_env_board(config)
    for module in _area_modules:
        for line in getattr(module, "MARKERS", []):
            config.addinivalue_line("markers", line)
        if hasattr(module, "configure"):  # an area's session hooks
            module.configure(config)


def pytest_runtest_setup(item: pytest.Item) -> None:
    fixtures_board.skip_by_marker(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.failed:  # once, in the phase that failed: the board's side of the story
        console = fixtures_board.console_of(item)
        if console:
            report.sections.append(("board console", console[-20000:]))
