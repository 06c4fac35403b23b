"""pytest fixture of fleets: `fleet`, N simulated boards running one firmware (fleet/fleet.py).

    @pytest.mark.firmware("firmware_under_test/weather_station")
    def test_two_hundred_stations(fleet):
        stations = fleet(200, values=lambda i: {"sensors": {"bme280@0x76": {"temperature": 10 + i % 20}}},
                         extra={"interval_s": 1})
        stations.expect_online(timeout=60)
        stations.collect(5, "telemetry", timeout=60)
        stations.assert_none_lost("telemetry")

fleet(n, firmware=None, values=None, *, extra=None, time=None, profile=None, workers=None,
keepalive=30, files=None, topics=None, engines=None) -> Fleet. `firmware`: a folder (relative: to the rootdir)
or a Firmware; default: the test's (--firmware, or @pytest.mark.firmware). The board clock is
the test's @pytest.mark.sim(time=...) or --sim-time unless `time` says; fleets are simulated
whatever --board says. `engines` (default: --fleet-engine, repeatable, or the ini key
hil_fleet_engine, space-separated): Docker engine URLs whose containers run the boards, spread
over them in turn. Every fleet is closed at the end of the test, its boards' consoles
saved in the test's artifact folder (fleet-1/<client id>.console.log, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest

from ..deploy.firmware import Firmware
from ..deploy.device_start import firmware_of
from ..fleet.fleet import Fleet
from .options import options


@pytest.fixture
def fleet(request: pytest.FixtureRequest, broker: Any, hil_artifacts: Path) -> Iterator[Callable[..., Fleet]]:
    """Start fleets of simulated boards: fleet(n, firmware=None, values=lambda i: {...}, ...)."""
    opts = options(request.config)
    marker = request.node.get_closest_marker("sim")
    marked = dict(marker.kwargs) if marker else {}
    started: list[Fleet] = []

    def start(n: int, firmware: str | Path | Firmware | None = None, values: Callable[[int], dict] | None = None,
              *, extra: dict | Callable[[int], dict] | None = None, time: str | None = None,
              profile: str | None = None, workers: int | None = None, keepalive: int = 30,
              files: dict[str, Any] | None = None, topics: dict[str, str] | None = None,
              engines: Sequence[str] | None = None) -> Fleet:
        chosen = (firmware_of(firmware, Path(request.config.rootpath)) if firmware is not None
                  else request.getfixturevalue("firmware"))
        started.append(Fleet.start(
            broker, chosen, n, values=values, extra=extra,
            time_mode=time or marked.get("time") or opts.sim_time or "real",
            profile=profile or marked.get("profile") or opts.sim_profile or "esp32",
            micropython=opts.micropython, timeout=opts.board_timeout, workers=workers,
            keepalive=keepalive, files=files, topics=topics,
            engines=opts.fleet_engines if engines is None else engines))
        return started[-1]

    try:
        yield start
    finally:
        for number, one in enumerate(started, 1):
            one.close()
            one.save_consoles(hil_artifacts / f"fleet-{number}")
