"""TLS on the harness's side: the CA and certificates made for a broker, amqtt and mosquitto
listening with TLS (server and mutual), the harness's MQTT client over it (from several threads
at once), an external broker's TLS from files, and what boards get (config placeholders,
/hil_config.json's mqtt.tls)."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import threading
import time

import pytest
from cryptography import x509

from micropython_hil.deploy.config_files import DeviceTls, Endpoints, render
from micropython_hil.deploy.device_config import build_config, dumps
from micropython_hil.errors import BrokerError, HarnessError, MqttError
from micropython_hil.mqtt.broker import AmqttBroker, MosquittoBroker, make_broker
from micropython_hil.mqtt.telemetry import Telemetry
from micropython_hil.mqtt.tls import GeneratedTls, ProvidedTls, pem_to_der
from micropython_hil.secret import Secret
from micropython_hil.tempdirs import MARKER

KINDS = ["amqtt", "mosquitto"]


def start(kind: str, **kwargs):
    if kind == "mosquitto" and (reason := MosquittoBroker.available()):
        pytest.skip(reason)
    return (AmqttBroker if kind == "amqtt" else MosquittoBroker)(**kwargs).start()


@pytest.fixture(scope="module", params=KINDS)
def mutual_broker(request):
    broker = start(request.param, tls_mode="mutual")
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def tls():
    material = GeneratedTls(["192.0.2.7", "broker.lab"], mutual=True)
    yield material
    material.close()


def _key_body(key_pem: str) -> str:
    """A line from the middle of a PEM key: what would show if the key leaked."""
    return key_pem.reveal().splitlines()[1]


# -- the material


def test_the_server_certificate_names_every_address_and_the_ca_signs_it(tls):
    ca = x509.load_pem_x509_certificate(tls.ca_pem.encode())
    server = x509.load_pem_x509_certificate(tls.server_cert_file.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1", "192.0.2.7"}
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "broker.lab"}
    # Valid from the ESP32's epoch: a board that never set its clock accepts it.
    assert server.not_valid_before_utc.year == 2000
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_client_certificates_are_made_per_name_once_and_signed_by_the_ca(tls):
    ca = x509.load_pem_x509_certificate(tls.ca_pem.encode())
    one, again, other = tls.client_cert("weather-1"), tls.client_cert("weather-1"), tls.client_cert("../odd name")
    assert one is again and one.cert_pem != other.cert_pem
    cert = x509.load_pem_x509_certificate(one.cert_pem.encode())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=weather-1"
    assert isinstance(one.key_pem, Secret) and one.key_pem.reveal().startswith("-----BEGIN PRIVATE KEY-----")
    assert other.cert_file.parent == tls.dir  # an odd name stays inside the folder
    for key_file in (one.key_file, tls.server_key_file):
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


def test_no_key_material_in_reprs(tls):
    cert = tls.client_cert("weather-1")
    device = DeviceTls(tls.ca_pem, "127.0.0.1", cert.cert_pem, cert.key_pem)
    endpoints = Endpoints("127.0.0.1", 8883, "weather-1", tls=device)
    shown = " ".join(repr(x) for x in (tls, cert, device, endpoints, endpoints.values(),
                                       build_config(_Where(), "weather-1", tls=device)))
    assert "PRIVATE KEY" not in shown and _key_body(cert.key_pem) not in shown
    assert "weather-1" in shown


def test_the_folder_is_marked_and_removed_on_close():
    material = GeneratedTls()
    folder = material.dir
    assert (folder / MARKER).is_file() and (folder / "ca.pem").is_file()
    material.close()
    assert not folder.exists()
    with pytest.raises(BrokerError, match="stopped"):
        material.client_cert("late")


def test_pem_to_der():
    material = GeneratedTls()
    try:
        der = pem_to_der(material.ca_pem)
        assert x509.load_der_x509_certificate(der).subject == x509.load_pem_x509_certificate(material.ca_pem.encode()).subject
    finally:
        material.close()
    with pytest.raises(BrokerError, match="not PEM"):
        pem_to_der("hello")


# -- brokers and the harness's client


@pytest.mark.parametrize("kind", KINDS)
def test_server_tls_carries_messages_and_plain_mqtt_is_refused(kind):
    broker = start(kind, tls_mode="server")
    try:
        assert broker.url == f"mqtts://127.0.0.1:{broker.port}" and broker.tls.mode == "server"
        with Telemetry(broker) as telemetry, broker.client(tls=broker.tls.client_context(None)) as client:
            client.publish("dev/t", "1", qos=1)
            assert telemetry.expect("dev/t", timeout=5).payload == b"1"
        with pytest.raises(MqttError, match=str(broker.port)):
            broker.client(tls=None)
    finally:
        broker.stop()
    assert broker.tls is None  # the CA went with the broker


def test_mutual_tls_from_several_threads_at_once(mutual_broker):
    """One client's reader thread reads (and acks) while four threads publish through it: one
    TLS session read and written at once must stay intact."""
    got = []
    done = threading.Event()

    def on_message(topic, payload, *rest):
        got.append(payload)
        if len(got) == 400:
            done.set()

    with mutual_broker.client(on_message=on_message) as client:
        client.subscribe("load/#", qos=1)

        def publish(n):
            for i in range(100):
                client.publish(f"load/{n}", b"x" * (i * 37), qos=1 if i % 2 else 0)

        threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert done.wait(10), f"{len(got)} of 400 delivered"
    assert sorted(len(p) for p in got) == sorted(i * 37 for i in range(100) for _ in range(4))


def test_under_mutual_tls_a_client_without_an_accepted_certificate_is_refused(mutual_broker):
    with pytest.raises(MqttError, match="certificate"):
        mutual_broker.client(tls=mutual_broker.tls.client_context(None))
    stranger = GeneratedTls(mutual=True)  # a certificate from another CA
    try:
        with pytest.raises(MqttError, match=f"{mutual_broker.port}"):
            mutual_broker.client(tls=mutual_broker.tls.client_context(stranger.client_cert("stranger")))
    finally:
        stranger.close()


def test_a_broker_whose_certificate_is_for_another_name_is_refused(mutual_broker):
    context = mutual_broker.tls.client_context(mutual_broker.tls.client_cert("hil"))
    with pytest.raises(MqttError, match="did not verify"):
        mutual_broker.client(tls=context, server_hostname="elsewhere.example")


def test_a_tls_client_on_a_plain_port_gets_a_clear_error():
    material = GeneratedTls()
    try:
        with AmqttBroker() as plain:  # amqtt waits for a CONNECT, and a ClientHello is none
            with pytest.raises(MqttError, match=r"TLS with MQTT broker .* failed.*no answer within 0.5 s \(is this port TLS"):
                plain.client(tls=material.client_context(), timeout=0.5)
    finally:
        material.close()


def test_restart_and_kick_keep_tls(mutual_broker):
    keeper = mutual_broker.client("keeper", clean=False)
    mutual_broker.kick("keeper")  # on mosquitto: a session take-over, over TLS itself
    deadline = time.monotonic() + 5
    while keeper.connected and time.monotonic() < deadline:
        time.sleep(0.01)  # polled: the client announces no disconnect
    assert not keeper.connected
    keeper.close()
    mutual_broker.restart(keep_sessions=True)
    with mutual_broker.client() as client:
        client.ping()


def test_a_ca_given_to_a_broker_stays_the_givers(tls):
    with AmqttBroker(tls=tls) as broker:
        assert broker.tls_mode == "mutual"
        with broker.client() as client:
            client.ping()
    assert broker.tls is tls and tls.dir.exists()  # not removed: the test made it
    with pytest.raises(BrokerError, match="needs a CA of its own"):
        AmqttBroker(tls=ProvidedTls(tls.ca_file)).start()
    with pytest.raises(BrokerError, match="tls_mode 'server' but the TLS given is mutual"):
        AmqttBroker(tls=tls, tls_mode="server")


# -- an external broker's TLS, from files


def test_an_external_broker_over_mutual_tls_from_files(mutual_broker):
    cert = mutual_broker.tls.client_cert("bench")
    spec = f"127.0.0.1:{mutual_broker.port}"
    external = make_broker(spec, tls="mutual", ca=mutual_broker.tls.ca_file, cert=cert.cert_file,
                           key=cert.key_file).start()
    try:
        assert isinstance(external.tls, ProvidedTls) and external.tls.client_cert("any") is not None
        with Telemetry(external) as telemetry, external.client() as client:
            client.publish("ext/t", "hello", qos=1)
            assert telemetry.expect("ext/t", timeout=5).payload == b"hello"
    finally:
        external.stop()
    other = GeneratedTls()
    try:
        with pytest.raises(BrokerError, match=rf"{spec}: TLS handshake failed .*--broker-ca"):
            make_broker(spec, tls="server", ca=other.ca_file).start()
    finally:
        other.close()


def test_tls_option_mistakes_are_one_line_errors(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    cases = [
        (dict(spec="amqtt", tls="both"), "--broker-tls 'both': use one of server, mutual"),
        (dict(spec="mosquitto", tls="server", ca=ca), "--broker-ca is for an external --broker"),
        (dict(spec="h:8883", tls="server"), "needs --broker-ca FILE"),
        (dict(spec="h:8883", ca=ca), "need --broker-tls"),
        (dict(spec="h:8883", tls="mutual", ca=ca), "--broker-tls mutual needs --broker-cert and --broker-key"),
        (dict(spec="h:8883", tls="server", ca=ca), f"--broker-ca {ca}: no PEM CERTIFICATE"),
        (dict(spec="h:8883", tls="server", ca=tmp_path / "missing.pem"), "cannot read it"),
        (dict(spec="h:8883", tls="mutual", ca=ca, cert=ca), "go together"),
    ]
    for kwargs, message in cases:
        with pytest.raises(BrokerError, match=message) as info:
            make_broker(**kwargs)
        assert "\n" not in str(info.value)


# -- what boards get


class _Where:
    host, port, credentials = "127.0.0.1", 8883, None


def test_config_placeholders_and_hil_config_carry_the_boards_tls(tls):
    cert = tls.client_cert("weather-1")
    device = DeviceTls(tls.ca_pem, "127.0.0.1", cert.cert_pem, cert.key_pem)
    endpoints = Endpoints("127.0.0.1", 8883, "weather-1", tls=device)
    station = json.loads(render("station.json", {"tls": "{tls}", "ca": "{tls_ca}", "key": "{tls_key}",
                                                 "name": "{tls_server_name}"}, endpoints))
    assert station == {"tls": True, "ca": tls.ca_pem, "key": cert.key_pem.reveal(), "name": "127.0.0.1"}
    assert render("certs/ca.der", lambda v: v["tls_ca_der"], endpoints) == pem_to_der(tls.ca_pem)
    assert render("certs/key.der", lambda v: v["tls_key_der"], endpoints) == pem_to_der(cert.key_pem)
    plain = Endpoints("127.0.0.1", 1883, "weather-1")
    assert json.loads(render("s.json", {"tls": "{tls}", "ca": "{tls_ca}"}, plain)) == {"tls": False, "ca": None}

    written = json.loads(dumps(build_config(_Where(), "weather-1", tls=device)))
    assert written["mqtt"]["tls"] == {"ca": tls.ca_pem, "cert": cert.cert_pem, "key": cert.key_pem.reveal(),
                                      "server_hostname": "127.0.0.1"}
    server_only = json.loads(dumps(build_config(_Where(), "weather-1", tls=DeviceTls(tls.ca_pem, "broker.lab"))))
    assert server_only["mqtt"]["tls"]["cert"] is None and server_only["mqtt"]["tls"]["key"] is None
    assert json.loads(dumps(build_config(_Where(), "weather-1")))["mqtt"]["tls"] is None
    old = build_config(_Where(), "weather-1")
    del old["mqtt"]["tls"]  # files written before TLS existed stay valid
    dumps(old)
    with pytest.raises(HarnessError, match="mqtt/tls/ca"):
        dumps(build_config(_Where(), "weather-1", tls=DeviceTls("garbage", "127.0.0.1")))


def test_server_hostname_and_sans_take_the_lan_address():
    material = GeneratedTls(["192.0.2.33"])
    try:
        server = x509.load_pem_x509_certificate(material.server_cert_file.read_bytes())
        names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address("192.0.2.33") in names.get_values_for_type(x509.IPAddress)
    finally:
        material.close()
