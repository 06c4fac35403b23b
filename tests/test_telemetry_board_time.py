"""Board times on recorded messages, joined from the simulator's record of each publish."""

from micropython_hil.mqtt.broker import make_broker
from micropython_hil.sim.simulator import Publish
from micropython_hil.mqtt.telemetry import Telemetry


def test_messages_get_the_board_time_of_their_publish_in_order_per_topic():
    with make_broker("amqtt").start() as broker, Telemetry(broker) as telemetry:
        publisher = broker.client("dev-1")
        for i in range(3):
            publisher.publish("dev/t", f"{i}", qos=1)
        publisher.publish("dev/status", "online", qos=1)
        telemetry.collect(4, "dev/#", timeout=5)
        publishes = [Publish("dev/t", 1_000_000 * i, 1, 0.0) for i in range(3)] + \
                    [Publish("dev/status", 42, 6, 0.0)]
        telemetry.attach_board_clock(publishes, "dev-1")
        intervals = telemetry.assert_rate("dev/t", every=1.0, tolerance=0.001, clock="board")
        assert intervals == [1.0, 1.0]
        assert [m.board_time_us for m in telemetry.select("dev/status")] == [42]
        publisher.close()
