"""A broker restart while the reference firmware publishes at QoS 1: no reading lost, none
duplicated beyond the protocol's allowance, on both brokers."""

import pytest

from micropython_hil.board.board import Board
from micropython_hil.mqtt.broker import MosquittoBroker, make_broker
from micropython_hil.deploy.device_config import build_config
from micropython_hil.deploy.firmware import Firmware
from micropython_hil.sim.simulator import Simulator
from micropython_hil.mqtt.telemetry import Telemetry


@pytest.mark.parametrize("kind", ["amqtt", "mosquitto"])
def test_broker_restart_during_qos1_publishing_loses_nothing(kind):
    if kind == "mosquitto" and (reason := MosquittoBroker.available()):
        pytest.skip(f"mosquitto: {reason}")
    with make_broker(kind).start() as broker, Telemetry(broker) as telemetry, \
            Simulator(time_mode="real") as sim, Board.unix(sim=sim) as board:
        sim.sensor("bme280", address=0x76).set(temperature=20.0, pressure=1000.0, humidity=50.0)
        sim.adc(34).set(1.9)
        config = build_config(broker, "wx-restart", topic_prefix="t/wx", extra={"interval_s": 1})
        Firmware("firmware_under_test/weather_station").start(board, config)
        telemetry.collect(2, "t/wx/telemetry", timeout=20)
        broker.restart(keep_sessions=True, downtime=2.5)
        board.console.expect(r"link: online \(connect #2\)", timeout=30)
        last_before = telemetry.select("t/wx/telemetry")[-1].json()["seq"]
        telemetry.collect(last_before + 3, "t/wx/telemetry", timeout=30)
        values = telemetry.sequence("t/wx/telemetry")
        assert values["gaps"] == [], f"readings lost across the restart: {values}"
        # QoS 1 allows a duplicate only for a message whose PUBACK was lost in the restart.
        assert len(values["duplicates"]) <= 1, values
        assert telemetry.select("t/wx/telemetry")[-1].json()["dropped"] == 0
