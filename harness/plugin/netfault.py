"""pytest fixtures of the fault proxy: `netfault`, a FaultProxy in front of the `broker` fixture.

Wiring (plugin.py): call `add_options(parser)` from `pytest_addoption` and import `netfault` so
pytest registers it. The board is then pointed at `netfault.host`/`netfault.port` instead of the
broker's. `broker` may be any fixture whose value has `.host` and `.port` (an embedded amqtt,
mosquitto, or an HTTP endpoint); override it to put the proxy in front of something else.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from ..netfault.proxy import FaultProxy


def add_options(parser: pytest.Parser) -> None:
    """Options for boards on a bench, which reach the proxy over the LAN, not loopback."""
    group = parser.getgroup("micropython-hil netfault")
    group.addoption("--netfault-listen", default="127.0.0.1", metavar="HOST",
                    help="address the fault proxy listens on (0.0.0.0 or a LAN address for real boards)")
    group.addoption("--netfault-advertise", default=None, metavar="HOST",
                    help="address boards are told to connect to (default: the listen address)")


def _option(config: pytest.Config, name: str, default: str | None) -> str | None:
    try:
        return config.getoption(name)
    except ValueError:  # add_options not wired: loopback only
        return default


@pytest.fixture
def netfault(request: pytest.FixtureRequest, broker: object) -> Iterator[FaultProxy]:
    """A started FaultProxy forwarding to `broker.host:broker.port`, closed after the test.

    A schedule that could not apply one of its faults fails the test at teardown.
    """
    host, port = getattr(broker, "host", None), getattr(broker, "port", None)
    if not host or not port:
        raise pytest.UsageError(f"netfault: the broker fixture gave {broker!r} without .host and .port; "
                                "override `broker` with an object that has both")
    proxy = FaultProxy(host, port,
                       listen_host=_option(request.config, "--netfault-listen", "127.0.0.1"),
                       advertise_host=_option(request.config, "--netfault-advertise", None))
    with proxy:
        yield proxy
        errors = [e for s in proxy.schedules if not s.reported for e in s.errors]
    if errors:
        pytest.fail(f"netfault schedule on {proxy!r}: {errors[0]}", pytrace=False)
