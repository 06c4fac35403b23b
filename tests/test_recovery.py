"""Outage checks against recorded traffic (a real embedded broker, the harness's own client)."""

import json
from types import SimpleNamespace

import pytest

from micropython_hil.mqtt.broker import make_broker
from micropython_hil.mqtt.outage import Outage
from micropython_hil.mqtt.telemetry import Telemetry, TelemetryError


def device():
    return SimpleNamespace(client_id="dev", board=SimpleNamespace(sim=None), topic=lambda name: f"d/{name}")


def send(client, *seqs):
    for seq in seqs:
        client.publish("d/telemetry", json.dumps({"seq": seq}), qos=1)


@pytest.fixture
def recorded():
    with make_broker("amqtt").start() as broker, Telemetry(broker) as telemetry:
        client = broker.client("dev")
        yield telemetry, client
        client.close()


def test_the_message_in_flight_may_repeat_once(recorded):
    telemetry, client = recorded
    outage = Outage(telemetry, device())
    with outage:
        send(client, 1, 2, 3)
        telemetry.collect(3, "d/telemetry")
    send(client, 3, 4, 5)  # 3's PUBACK was lost: sent again after the outage
    assert outage.assert_no_loss("telemetry", min_after=3) == [1, 2, 3, 3, 4, 5]


def test_a_gap_or_a_repeat_after_the_outage_fails(recorded):
    telemetry, client = recorded
    outage = Outage(telemetry, device())
    with outage:
        send(client, 1, 2)
        telemetry.collect(2, "d/telemetry")
    send(client, 4, 4)
    telemetry.collect(4, "d/telemetry")
    with pytest.raises(TelemetryError, match="missing 3"):
        outage.assert_no_loss("telemetry", min_after=2)


def test_repeats_of_values_first_sent_after_the_outage_are_beyond_qos1(recorded):
    telemetry, client = recorded
    outage = Outage(telemetry, device())
    with outage:
        send(client, 1)
        telemetry.collect(1, "d/telemetry")
    send(client, 2, 2, 3)
    with pytest.raises(TelemetryError, match=r"duplicated \[2\], beyond"):
        outage.assert_no_loss("telemetry", min_after=3)


def test_last_will_and_back_online_on_the_host_clock(recorded):
    telemetry, client = recorded
    outage = Outage(telemetry, device())
    with outage:
        client.publish("d/status", "offline", qos=1, retain=True)
        outage.assert_last_will(timeout=5)
    client.publish("d/status", "online", qos=1, retain=True)
    assert 0 <= outage.assert_back_online(within=5) < 5
    with pytest.raises(TelemetryError, match="end\\(\\) it"):
        Outage(telemetry, device()).start().assert_back_online()
