"""pytest fixtures of Docker engines: `docker_engine` and `docker_mosquitto_image`, the broker
`--broker docker:IMAGE[:TAG]` starts (`start_docker_broker`, called by the broker fixture), and
docker boards: `docker_board`, a simulated board in a container on its own network, whatever
--board says (`--board docker:PROFILE` opens the same: plugin/board.py's make_board).

A test module runs its board, and so `sim` and `start_firmware`, in a container by overriding
the board fixture (or the whole run does, with --board docker):

    @pytest.fixture
    def board(docker_board):
        return docker_board

    def test_lossy_wifi(board, start_firmware, telemetry):
        device = start_firmware()
        with board.network.loss(10):     # the container's link (a KernelLink)
            ...

Options (group "broker in a container"): --broker-files CONTAINER_PATH=HOST_FILE[,...] (the
broker's config, password file, certificates, copied in before it starts), --broker-container-port
(its MQTT port inside, default 1883), --broker-user and --broker-password (env HIL_BROKER_PASSWORD):
how the harness and the boards log in. The engine is the one DOCKER_HOST names, else the local
socket; where none answers, these fixtures skip and say how to get one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from ..board.board import Board
from ..containers.engine import Engine
from ..containers.images import mosquitto_available, mosquitto_image
from ..errors import HarnessError
from ..mqtt.docker_broker import DockerBroker, make_docker_broker
from ..mqtt.tls import ProvidedTls
from .board import lent_to_test, make_simulator, open_docker_board_or_skip
from .options import options


def _engine_or_skip() -> Engine:
    try:
        return Engine()
    except HarnessError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    """The Docker engine DOCKER_HOST names (else the local socket); skips where none answers."""
    engine = _engine_or_skip()
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(scope="session")
def docker_mosquitto_image(docker_engine: Engine) -> str:
    """The reference of this machine's mosquitto as an image on `docker_engine`, imported once
    (no registry); skips where mosquitto is not installed."""
    reason = mosquitto_available()
    if reason:
        pytest.skip(reason)
    return mosquitto_image(docker_engine)


def start_docker_broker(config: pytest.Config) -> DockerBroker:
    """The started broker of `--broker docker:IMAGE[:TAG]` with the options' files, port and
    credentials; skips the tests where no engine answers. BrokerError when it will not start."""
    opts = options(config)
    _engine_or_skip().close()
    # TLS as for an external broker: the image's certificates come in with --broker-files, the CA
    # (and, for mutual TLS, the harness's client certificate) from --broker-ca/-cert/-key.
    tls = ProvidedTls(opts.broker_ca, opts.broker_cert, opts.broker_key) if opts.broker_tls and opts.broker_ca else None
    broker = make_docker_broker(opts.broker, files=dict(opts.broker_files),
                                container_port=opts.broker_container_port, credentials=opts.broker_credentials,
                                tls_mode=opts.broker_tls, tls=tls, lan=opts.broker_lan)
    return broker.start()


@pytest.fixture
def docker_board(request: pytest.FixtureRequest, hil_artifacts: Path) -> Iterator[Board]:
    """A simulated ESP32 (the test's sim marker applies) whose process runs in a container on
    its own network; `docker_board.network` is its KernelLink. Removed after the test."""
    marker = request.node.get_closest_marker("sim")
    sim = make_simulator(request.config, marker.kwargs if marker else {})
    try:
        the_board = open_docker_board_or_skip(sim, options(request.config).board_timeout)
    except BaseException:
        sim.close()
        raise
    with lent_to_test(request.node, the_board, hil_artifacts, start=len(the_board.console.text)):
        yield the_board
