"""pytest fixtures of MQTT-SN: `gateway`, an MQTT-SN gateway bridging UDP clients to the
`broker` fixture, and `udpfault`, a UDP fault proxy in front of it.

Options --mqttsn-listen (0.0.0.0 for boards on a bench, which reach the gateway over the LAN)
and --mqttsn-port (a fixed port, for firmware that has its gateway's port built in). The boards'
view: start_firmware(via=gateway) writes the gateway's address where the broker's would go;
via=udpfault puts the fault proxy in between. Each test's MQTT-SN traffic is saved as
mqttsn.jsonl beside its telemetry.jsonl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from ..errors import HarnessError
from ..mqttsn.gateway import Gateway
from ..netfault.udp import UdpFaultProxy
from .options import options


@pytest.fixture
def gateway(request: pytest.FixtureRequest, broker: Any, hil_artifacts: Path) -> Iterator[Gateway]:
    """A started MQTT-SN gateway in front of the `broker` fixture; its record of every datagram
    is `gateway.traffic`, saved as mqttsn.jsonl after the test. A fault of the gateway itself
    (`gateway.errors`) fails the test at teardown."""
    opts = options(request.config)
    try:
        gw = Gateway(broker, host=opts.mqttsn_listen, port=opts.mqttsn_port).start()
    except HarnessError as exc:
        raise pytest.UsageError(f"--mqttsn-listen/--mqttsn-port: {exc}") from None
    try:
        yield gw
    finally:
        gw.stop()
        gw.traffic.save_jsonl(hil_artifacts / "mqttsn.jsonl")
    if gw.errors:
        pytest.fail(f"MQTT-SN gateway {gw.host}:{gw.port} failed: {gw.errors[0]}", pytrace=False)


@pytest.fixture
def udpfault(request: pytest.FixtureRequest, gateway: Any) -> Iterator[UdpFaultProxy]:
    """A started UDP fault proxy forwarding to `gateway.host:gateway.port` (loss, duplication,
    reordering, delay, silence); point the board at it with start_firmware(via=udpfault).
    Override `gateway` with anything that has .host and .port to put it in front of another
    UDP service."""
    host, port = getattr(gateway, "host", None), getattr(gateway, "port", None)
    if not host or not port:
        raise pytest.UsageError(f"udpfault: the gateway fixture gave {gateway!r} without .host and .port")
    opts = options(request.config)
    with UdpFaultProxy(host, port, listen_host=opts.netfault_listen,
                       advertise_host=opts.netfault_advertise) as proxy:
        yield proxy
