"""pytest fixtures of the fault proxy: `netfault`, a FaultProxy in front of the `broker` fixture.

The board is pointed at `netfault.host`/`netfault.port` instead of the broker's (options
--netfault-listen and --netfault-advertise for boards on a bench, which reach it over the LAN). `broker` may be any fixture whose value has `.host` and `.port` (an embedded amqtt,
mosquitto, or an HTTP endpoint); override it to put the proxy in front of something else.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from ..netfault.proxy import FaultProxy
from .options import options


@pytest.fixture
def netfault(request: pytest.FixtureRequest, broker: object) -> Iterator[FaultProxy]:
    """A started FaultProxy forwarding to `broker.host:broker.port`, closed after the test.

    A schedule that could not apply one of its faults fails the test at teardown.
    """
    host, port = getattr(broker, "host", None), getattr(broker, "port", None)
    if not host or not port:
        raise pytest.UsageError(f"netfault: the broker fixture gave {broker!r} without .host and .port; "
                                "override `broker` with an object that has both")
    opts = options(request.config)
    proxy = FaultProxy(host, port, listen_host=opts.netfault_listen, advertise_host=opts.netfault_advertise)
    with proxy:
        yield proxy
        errors = [e for s in proxy.schedules if not s.reported for e in s.errors]
    if errors:
        pytest.fail(f"netfault schedule on {proxy!r}: {errors[0]}", pytrace=False)
