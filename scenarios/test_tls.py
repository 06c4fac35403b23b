"""The weather station over mutual TLS, as cloud brokers (AWS IoT, Azure IoT Hub, HiveMQ Cloud)
require it: on amqtt and on mosquitto, each with a CA made for this module, the board holding a
certificate of its own. Runs unchanged on the simulated board and on a real ESP32 (--broker-lan
puts the LAN address in the broker's certificate); the rate in the simulator's clock needs the
simulator."""

import pytest

from micropython_hil.errors import MqttError
from micropython_hil.mqtt import AmqttBroker, MosquittoBroker
from micropython_hil.plugin.options import options

pytestmark = pytest.mark.firmware("firmware_under_test/weather_station")


@pytest.fixture(scope="module", params=["amqtt", "mosquitto"])
def broker(request, pytestconfig):
    """A mutual-TLS broker of each kind for this module (overrides the plugin's `broker`, so
    start_firmware and telemetry use it)."""
    if request.param == "mosquitto" and (reason := MosquittoBroker.available()):
        pytest.skip(reason)
    kind = AmqttBroker if request.param == "amqtt" else MosquittoBroker
    with kind(lan=options(pytestconfig).broker_lan, tls_mode="mutual") as tls_broker:
        yield tls_broker


@pytest.mark.sim(time="fast")
def test_weather_station_over_mutual_tls(board, broker, start_firmware, telemetry, firmware):
    every = 600 if board.sim is not None else 5
    device = start_firmware(extra={"interval_s": every})
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    topic = device.topic("telemetry")
    readings = telemetry.collect(4, topic, timeout=30)
    telemetry.validate(readings, firmware.schema("telemetry"))
    telemetry.assert_sequence(topic)
    # Publishes written through TLS are stamped with the board's clock like plain ones.
    telemetry.assert_rate(topic, every=every, tolerance=0.01, clock="board", time_field="ts", time_unit=1)
    if board.sim is not None:  # the simulator's own record of what the board wrote through TLS
        assert board.sim.wait_until(lambda: [p.topic for p in board.sim.publishes].count(topic) >= 4, 5), \
            "the board's TLS publishes were not stamped"
        telemetry.assert_rate(topic, every=every, tolerance=0.01, clock="board")
    # A command from the harness reaches the board through the same TLS broker.
    mark = telemetry.mark()
    telemetry.publish(device.topic("cmd"), {"interval_s": every // 2}, retain=True)
    device.console.expect(rf"interval now {every // 2} s", timeout=15)
    telemetry.collect(2, topic, since=mark, timeout=30)
    telemetry.publish(device.topic("cmd"), b"", retain=True)


def test_a_client_without_a_certificate_is_refused(broker):
    with pytest.raises(MqttError, match="certificate"):
        with broker.client(tls=broker.tls.client_context(None)):
            pass


def test_plain_mqtt_is_refused_on_the_tls_port(broker):
    with pytest.raises(MqttError, match=rf"{broker.port}"):
        with broker.client(tls=None):
            pass


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_the_station_refuses_a_broker_its_ca_did_not_sign(broker, start_firmware):
    """A man in the middle: a TLS broker whose certificate another CA signed, on the address the
    board dials. MicroPython's SSLContext verifies nothing unless told to (CERT_NONE is its
    default, also for PROTOCOL_TLS_CLIENT): the station must refuse that broker, not publish there."""
    with type(broker)(tls_mode="server") as impostor:
        routed = []
        impostor.add_listener(lambda topic, *rest: routed.append(topic))
        device = start_firmware(via=impostor)
        device.console.expect(r"link: connect failed", timeout=15)
        device.console.expect(r"link: connect failed", timeout=15)  # and again: it keeps refusing
        assert "link: online" not in device.console.text
        assert routed == [], f"the station published to the impostor: {routed}"
