"""pytest fixtures for the broker, the telemetry recorder and the HTTP cloud.

Options: --broker amqtt|mosquitto|[USER:PASSWORD@]HOST:PORT, --broker-scope session|function,
--broker-lan (listen on the LAN with generated credentials, for real boards on a bench),
--broker-tls server|mutual (TLS only; an external broker's CA and client certificate from
--broker-ca, --broker-cert, --broker-key).
Each test's traffic is saved as telemetry.jsonl in the test's artifact folder.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from ..mqtt.broker import Broker, BrokerError, MosquittoBroker, make_broker
from ..mqtt.docker_broker import is_docker_spec
from ..board.unix_port import Launch, find_micropython
from ..cloud import Cloud
from ..deploy import packages
from ..mqtt.telemetry import Telemetry
from ..secret import reveal
from ..tether import Tether
from .docker import start_docker_broker
from .options import options


def _make(config: pytest.Config) -> Broker:
    opts = options(config)
    if opts.broker == "mosquitto" and (reason := MosquittoBroker.available()):
        pytest.skip(f"--broker mosquitto: {reason}")
    try:
        if is_docker_spec(opts.broker):  # --broker docker:IMAGE (its own module: it builds on ExternalBroker)
            return start_docker_broker(config)
        broker = make_broker(opts.broker, lan=opts.broker_lan, tls=opts.broker_tls, ca=opts.broker_ca,
                             cert=opts.broker_cert, key=opts.broker_key, port=opts.broker_port).start()
    except BrokerError as exc:
        raise pytest.UsageError(str(exc)) from None
    _announce(config, broker)
    return broker


def _announce(config: pytest.Config, broker: Broker) -> None:
    """Say where the broker listens, once it does, so mosquitto_sub can watch a test's traffic."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    # Brokers start inside a test's setup, whose output pytest captures: step outside it.
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line(f"hil broker: {broker.url} (watch: mosquitto_sub -h {broker.host} -p {broker.port} "
                            "-t '#' -v" + (" -u USER -P PASSWORD" if broker.credentials else "") + ")")


@pytest.fixture(scope="session")
def _hil_session_broker(pytestconfig: pytest.Config) -> Iterator[Broker | None]:
    if options(pytestconfig).broker_scope != "session":
        yield None
        return
    broker = _make(pytestconfig)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker(pytestconfig: pytest.Config, _hil_session_broker: Broker | None) -> Iterator[Broker]:
    """The MQTT broker boards connect to (kind and scope from --broker and --broker-scope)."""
    if _hil_session_broker is not None:
        yield _hil_session_broker
        return
    fresh = _make(pytestconfig)
    try:
        yield fresh
    finally:
        fresh.stop()


@pytest.fixture
def telemetry(request: pytest.FixtureRequest, broker: Broker, hil_artifacts: Path) -> Iterator[Telemetry]:
    """Every message routed during the test, with the domain checks; saved as telemetry.jsonl
    beside broker.txt (where the broker was); the count and broker are --junitxml properties."""
    recorder = Telemetry(broker)
    hil_artifacts.mkdir(parents=True, exist_ok=True)
    (hil_artifacts / "broker.txt").write_text(f"{broker.url}\n")
    try:
        yield recorder
    finally:
        recorder.close()
        recorder.save_jsonl(hil_artifacts / "telemetry.jsonl")
        request.node.user_properties += [("hil broker", broker.url),
                                         ("hil messages recorded", len(recorder.messages))]


@pytest.fixture
def cloud() -> Iterator[Cloud]:
    """An HTTP endpoint recording the device's requests and answering as configured."""
    with Cloud() as endpoint:
        yield endpoint


# Prepended to micropython_mqtt scripts: where the broker is, and a connect() that sets
# TCP_NODELAY (umqtt writes each packet in pieces; without it every QoS 1 round trip costs ~40 ms).
_PRELUDE = """\
from umqtt.simple import MQTTClient
HOST, PORT, USER, PASSWORD = {host!r}, {port!r}, {user!r}, {password!r}

def connect(client_id, clean=True, keepalive=0, will=None, cls=MQTTClient):
    c = cls(client_id, HOST, PORT, user=USER, password=PASSWORD, keepalive=keepalive)
    if will:
        c.set_last_will(*will)
    c.connect(clean)
    c.sock.setsockopt(6, 1, 1)
    return c

"""


@pytest.fixture
def micropython_mqtt(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start MicroPython unix-port scripts with umqtt.simple/robust importable; killed by pid after
    (and with pytest, however it ends: they are started like boards, see board.unix_port).

    spawn(script, broker=b) prepends HOST, PORT, USER, PASSWORD and a `connect(client_id, clean=True,
    keepalive=0, will=None)` helper returning a connected umqtt client.
    """
    lib = packages.ensure(["umqtt.simple", "umqtt.robust"])
    binary = find_micropython()
    tether = Tether("micropython-mqtt")
    started: list[subprocess.Popen] = []

    def spawn(script: str, *args: str, broker: Broker | None = None) -> subprocess.Popen:
        path = tmp_path / f"mpy_{len(started)}.py"
        if broker is not None:
            user, password = broker.credentials or (None, None)
            script = _PRELUDE.format(host=broker.host, port=broker.port, user=user, password=reveal(password)) + script
        path.write_text(script)
        launch = Launch.for_root(binary, tmp_path, extra_args=[str(path), *args],
                                 extra_env={"MICROPYPATH": f".frozen:{lib}"})
        proc = launch.start(tether, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()
        tether.close()
