"""A broker in a container (`--broker docker:IMAGE`): started through the docker SDK on a real
engine, health-checked, recorded by telemetry, removed at the end and after a killed run, and
never a container that is not the harness's. The image is this machine's mosquitto, imported
locally (containers/images.py): nothing is pulled. Skips where no engine answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from micropython_hil.containers import LABEL, ROLE_LABEL, Engine, run_id
from micropython_hil.errors import BrokerError
from micropython_hil.mqtt.docker_broker import DockerBroker, is_docker_spec, make_docker_broker
from micropython_hil.mqtt.telemetry import Telemetry
from micropython_hil.plugin.mqtt import micropython_mqtt  # noqa: F401 - fixture
from micropython_hil.secret import Secret


@pytest.fixture(scope="module")
def mosquitto(docker_mosquitto_image):
    """A started broker from the local image, shared by the module's read-only tests."""
    broker = DockerBroker(image=docker_mosquitto_image).start()
    yield broker
    broker.stop()


def exists(engine: Engine, name: str) -> bool:
    return bool(engine.client.containers.list(all=True, filters={"name": f"^/{name}$"}))


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_local_mosquitto_image_starts_answers_and_is_removed(docker_engine, docker_mosquitto_image):
    assert docker_mosquitto_image.startswith("micropython-hil/mosquitto:")
    image = docker_engine.client.images.get(docker_mosquitto_image)
    assert image.attrs["Config"]["Entrypoint"] == ["/usr/sbin/mosquitto"]
    assert image.labels["micropython-hil.image"] == "micropython-hil/mosquitto"
    assert len(image.history()) == 1  # one imported layer of this machine's files: no base image pulled
    broker = DockerBroker(image=docker_mosquitto_image).start()
    name, port = broker.name, broker.port
    container = docker_engine.client.containers.get(name)
    assert container.labels[LABEL] == run_id() and container.labels[ROLE_LABEL] == "broker"
    assert broker.host == "127.0.0.1" and port > 0 and broker.url == f"mqtt://127.0.0.1:{port}"
    assert container.ports["1883/tcp"][0]["HostIp"] == "127.0.0.1"  # loopback only
    with broker.client() as client:
        client.ping()
    broker.stop()
    assert not exists(docker_engine, name) and refused(port)


def test_telemetry_from_a_umqtt_client(mosquitto, micropython_mqtt):
    with Telemetry(mosquitto) as telemetry:
        proc = micropython_mqtt("""
c = connect("umqtt-docker")
for i in range(5):
    c.publish(b"dock/t", b'{"seq": %d}' % i, False, 1)
c.disconnect()
""", broker=mosquitto)
        assert proc.wait(15) == 0, proc.stdout.read().decode()
        readings = telemetry.collect(5, "dock/t", timeout=10)
        assert [m.json()["seq"] for m in readings] == list(range(5))
        assert {m.qos for m in readings} == {1}
        telemetry.assert_sequence("dock/t")


def test_the_last_will_of_a_vanished_umqtt_client(mosquitto, micropython_mqtt):
    with Telemetry(mosquitto) as telemetry:
        proc = micropython_mqtt("""
c = connect("umqtt-will", keepalive=60, will=(b"dock/status", b"offline", True, 1))
c.publish(b"dock/status", b"online", True, 1)
c.sock.close()  # gone without DISCONNECT, as a device losing power
""", broker=mosquitto)
        proc.wait(15)
        telemetry.expect_last_will("dock/status", b"offline", timeout=10)


def leftover(engine: Engine, image: str, label: str | None, name: str):
    labels = {LABEL: label, ROLE_LABEL: "broker"} if label is not None else {"purpose": "not the harness's"}
    return engine.client.containers.create(image, name=name, labels=labels)


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_next_start_removes_a_killed_runs_container_and_nothing_else(docker_engine, docker_mosquitto_image):
    tag = os.urandom(3).hex()
    mine_dead = run_id(os.getpid()).rsplit("/", 2)[0] + f"/{dead_pid()}/1"   # this machine and boot, owner gone
    others = {
        f"hil-test-unlabelled-{tag}": None,                                   # no label: someone else's
        f"hil-test-other-machine-{tag}": f"another-machine/boot/{dead_pid()}/1",
        f"hil-test-live-run-{tag}": run_id(),                                 # this (live) run's
        f"hil-test-garbled-{tag}": "not/a/label",
    }
    created = [leftover(docker_engine, docker_mosquitto_image, mine_dead, f"hil-test-killed-{tag}")]
    created += [leftover(docker_engine, docker_mosquitto_image, label, name) for name, label in others.items()]
    try:
        with DockerBroker(image=docker_mosquitto_image):
            assert not exists(docker_engine, f"hil-test-killed-{tag}")
            assert all(exists(docker_engine, name) for name in others)
    finally:
        for container in created:
            try:
                container.remove(force=True)
            except docker_engine.errors.NotFound:
                pass


def test_the_container_of_a_sigkilled_run_is_removed_by_the_next_start(docker_engine, docker_mosquitto_image):
    code = ("from micropython_hil.mqtt.docker_broker import DockerBroker; import time; "
            f"b = DockerBroker(image={docker_mosquitto_image!r}).start(); print(b.name, flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        name = child.stdout.readline().strip()
        assert name and exists(docker_engine, name)
    finally:
        child.kill()  # SIGKILL: no teardown runs, the engine keeps the container
        child.wait()
        child.stdout.close()
    assert exists(docker_engine, name)
    with DockerBroker(image=docker_mosquitto_image) as broker:
        assert not exists(docker_engine, name) and broker.name != name


AUTH_CONF = """\
listener 1883 0.0.0.0
allow_anonymous false
password_file /mosquitto/config/passwd
"""


def hashed_password_file(tmp_path, user: str, password: str) -> bytes:
    path = tmp_path / "passwd"
    path.write_text(f"{user}:{password}\n")
    subprocess.run(["mosquitto_passwd", "-U", str(path)], check=True, capture_output=True)
    return path.read_bytes()


def test_config_and_credentials_from_the_test(docker_mosquitto_image, tmp_path):
    password = Secret("s3cret-" + os.urandom(4).hex())
    files = {"/mosquitto/config/mosquitto.conf": AUTH_CONF,
             "/mosquitto/config/passwd": hashed_password_file(tmp_path, "dev", password.reveal())}
    with DockerBroker(image=docker_mosquitto_image, files=files, credentials=("dev", password)) as broker:
        assert password.reveal() not in repr(broker) and password.reveal() not in broker.url
        with Telemetry(broker) as telemetry:
            with broker.client() as client:
                client.publish("auth/ok", b"1", qos=1)
            telemetry.expect("auth/ok", timeout=5)
        with pytest.raises(Exception, match="refused"):
            DockerBroker(host=broker.host, port=broker.port).client().close()  # anonymous: refused

    wrong = ("dev", Secret("wrong-password"))
    with pytest.raises(BrokerError, match=r"micropython-hil/mosquitto.* refused the credentials given "
                                          r"\(CONNACK code 5\)") as info:
        DockerBroker(image=docker_mosquitto_image, files=files, credentials=wrong, start_timeout=10).start()
    assert "wrong-password" not in str(info.value) and len(str(info.value).splitlines()) == 1


def test_restart_keeps_port_sessions_and_capture_and_mute_freezes_it(docker_mosquitto_image):
    with DockerBroker(image=docker_mosquitto_image) as broker, Telemetry(broker) as telemetry:
        with broker.client(client_id="persist", clean=False, protocol=4) as sub:
            sub.subscribe("keep/#", qos=1)
        port = broker.port
        broker.restart()  # SIGTERM: the image's mosquitto saves its sessions
        assert broker.port == port
        with broker.client() as client:
            client.publish("keep/after", b"queued", qos=1)
        telemetry.expect("keep/after", timeout=5)  # capture came back by itself
        queued = []
        with broker.client(client_id="persist", clean=False, protocol=4,
                           on_message=lambda topic, payload, *rest: queued.append(payload)):
            deadline = time.monotonic() + 5
            while not queued and time.monotonic() < deadline:
                time.sleep(0.02)
        assert queued == [b"queued"], "the persistent session did not survive the restart"
        broker.mute_pings()
        try:
            with pytest.raises(Exception):
                broker.client(timeout=0.5).close()
        finally:
            broker.mute_pings(False)
        broker.restart(keep_sessions=False)
        assert broker.port == port
        with broker.client() as client:
            client.ping()


def test_failures_are_one_line_errors_naming_image_or_engine(docker_mosquitto_image):
    with pytest.raises(BrokerError, match=r"docker engine unix:///nonexistent/docker.sock: no such socket"):
        DockerBroker(image=docker_mosquitto_image, engine_url="unix:///nonexistent/docker.sock").start()
    with pytest.raises(BrokerError, match=r"localhost:1/hil-absent:x is not on docker engine .* could not be pulled"):
        DockerBroker(image="localhost:1/hil-absent:x").start()
    with pytest.raises(BrokerError, match=r"exited with code \d+ before answering MQTT"):
        DockerBroker(image=docker_mosquitto_image, command=["-c", "/no/such.conf"]).start()
    with pytest.raises(BrokerError, match="expected docker:IMAGE"):
        make_docker_broker("docker:")
    assert is_docker_spec("docker:eclipse-mosquitto:2") and not is_docker_spec("mosquitto")
    assert make_docker_broker("docker:eclipse-mosquitto:2").image == "eclipse-mosquitto:2"


def test_docker_host_names_the_engine(docker_mosquitto_image, tmp_path, monkeypatch):
    if not os.path.exists("/var/run/docker.sock"):
        pytest.skip("the engine under test is not the local socket")
    alias = tmp_path / "engine.sock"
    alias.symlink_to("/var/run/docker.sock")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{alias}")
    with DockerBroker(image=docker_mosquitto_image) as broker:
        assert broker.engine.url == f"unix://{alias}" and broker.engine.local
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    assert "docker engine tcp://127.0.0.1:1 is unreachable" in Engine.unavailable()


WEATHER = "firmware_under_test/weather_station"


@pytest.fixture
def broker(mosquitto):
    """start_firmware's broker in this module: the broker in a container."""
    return mosquitto


@pytest.fixture
def board(netns_board):
    return netns_board


@pytest.mark.firmware(WEATHER)
@pytest.mark.sim(time="real")
def test_a_board_in_its_namespace_against_the_broker_in_a_container(board, kernel_link, start_firmware, telemetry):
    """The whole path: a board's own network, its WiFi link, the host, docker's published port,
    mosquitto in its container; the link goes down under the open connection and comes back."""
    from micropython_hil.mqtt.outage import Outage

    board.sim.sensor("bme280", address=0x76).set(temperature=20.0, pressure=1000.0, humidity=50.0)
    board.sim.adc(34).set(1.9)
    device = start_firmware(keepalive=2, extra={"interval_s": 1})
    telemetry.collect(1, device.topic("telemetry"), timeout=20)
    with Outage(telemetry, device) as outage:
        with kernel_link.down():
            outage.assert_last_will(timeout=10)
    outage.assert_back_online(within=30)
    outage.assert_no_loss("telemetry", min_after=2)


def test_tls_from_the_tests_files(docker_mosquitto_image):
    """The image's TLS listener from certificates the test made (here by the harness's own CA
    maker); the harness verifies the broker against the CA, as for an external TLS broker."""
    from micropython_hil.mqtt.tls import GeneratedTls, ProvidedTls

    made = GeneratedTls()
    try:
        files = {"/mosquitto/config/mosquitto.conf": "listener 8883 0.0.0.0\nallow_anonymous true\n"
                                                     "cafile /mosquitto/certs/ca.pem\n"
                                                     "certfile /mosquitto/certs/server.pem\n"
                                                     "keyfile /mosquitto/certs/server.key\n",
                 "/mosquitto/certs/ca.pem": made.ca_file, "/mosquitto/certs/server.pem": made.server_cert_file,
                 "/mosquitto/certs/server.key": made.server_key_file}
        with DockerBroker(image=docker_mosquitto_image, files=files, container_port=8883, tls_mode="server",
                          tls=ProvidedTls(made.ca_file)) as broker, Telemetry(broker) as telemetry:
            assert broker.url.startswith("mqtts://127.0.0.1:")
            with broker.client() as client:
                client.publish("tls/ok", b"1", qos=1)
            telemetry.expect("tls/ok", timeout=5)
    finally:
        made.close()
    with pytest.raises(BrokerError, match="its TLS comes from your files"):
        DockerBroker(image=docker_mosquitto_image, tls_mode="server").start()
