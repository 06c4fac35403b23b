"""Fleets: N simulated boards started in parallel, each with its own values, its own telemetry,
and checks over the whole fleet that name the boards that fail them."""

import json
from pathlib import Path

import pytest

from micropython_hil.errors import TelemetryError
from micropython_hil.fleet.router import TelemetryRouter

STATION = "firmware_under_test/weather_station"

# A board that says it is online (unless told to stay silent) and sends five numbered messages,
# leaving one out when told to.
COUNTER = """\
import json, time
from umqtt.simple import MQTTClient
cfg = json.load(open("hil_config.json"))
m, x, prefix = cfg["mqtt"], cfg["extra"], cfg["topic_prefix"]
c = MQTTClient(m["client_id"], m["host"], port=m["port"], keepalive=0)
c.connect()
if not x["silent"]:
    c.publish((prefix + "/status").encode(), b"online", True, 1)
for seq in range(1, 6):
    if seq != x["skip"]:
        c.publish((prefix + "/telemetry").encode(), json.dumps({"seq": seq}).encode(), False, 1)
print("sent")
while True:
    time.sleep(1)
"""


@pytest.mark.firmware(STATION)
def test_a_fleet_of_stations_each_with_its_own_sensor_values(fleet, tmp_path):
    stations = fleet(8, values=lambda i: {"sensors": {"bme280@0x76": {"temperature": 10.0 + i}}},
                     extra={"interval_s": 1})
    assert len(stations) == 8 and stations.start_s > 0
    assert len({member.client_id for member in stations}) == 8
    # Launched without CPython's site initialisation (fleet/launcher.py): quicker and smaller.
    assert b"-S" in Path(f"/proc/{stations[0].board.port.pid}/cmdline").read_bytes().split(b"\0")
    stations.expect_online(timeout=30)
    readings = stations.collect(4, "telemetry", timeout=30)
    for member in stations:
        assert [r.json()["temperature_c"] for r in readings[member.index]] == [10.0 + member.index] * 4
        # Each board's telemetry holds its own messages only.
        assert {m.topic.split("/")[1] for m in member.telemetry.messages} == {member.client_id}
    stations.assert_rates("telemetry", every=1, tolerance=0.1, clock="board", skip=1)
    stations.assert_none_lost("telemetry", min_count=3)
    assert set(stations.lost("telemetry").values()) == {0}
    assert min(stations.counts("telemetry").values()) >= 3
    stations.save_consoles(tmp_path / "consoles")
    assert len(list((tmp_path / "consoles").glob("*.console.log"))) == 8


def test_fleet_checks_name_the_boards_that_fail_them(fleet, tmp_path):
    (tmp_path / "fw").mkdir()
    (tmp_path / "fw" / "main.py").write_text(COUNTER)
    (tmp_path / "fw" / "manifest.json").write_text(json.dumps({"packages": ["umqtt.simple"]}))
    boards = fleet(3, tmp_path / "fw", extra=lambda i: {"skip": 3 if i == 1 else 0, "silent": i == 2})
    for member in boards:
        member.console.expect("sent", timeout=15)
    with pytest.raises(TelemetryError, match=rf"1 of 3 boards did not publish b'online' on their 'status' topic "
                                             rf"within 0.5 s: {boards[2].client_id}\n"):
        boards.expect_online(timeout=0.5)
    with pytest.raises(TelemetryError, match=rf"sequence of 'telemetry': 1 of 3 boards failed: {boards[1].client_id}: "
                                             r"'seq' on '.*' is not a clean sequence: missing 3"):
        boards.assert_none_lost("telemetry")
    assert boards.lost("telemetry") == {0: 0, 1: 1, 2: 0}
    with pytest.raises(TelemetryError, match=rf"1 of 3 boards sent fewer than 5 messages on 'telemetry' within "
                                             rf"0.5 s \({boards[1].client_id}: 4\)"):
        boards.collect(5, "telemetry", timeout=0.5)


class _FakeBroker:
    kind, host, port = "fake", "127.0.0.1", 1

    def __init__(self):
        self.listeners = []

    def add_listener(self, listener):
        self.listeners.append(listener)

    def remove_listener(self, listener):
        self.listeners.remove(listener)

    def send(self, topic, client_id=None):
        for listener in list(self.listeners):
            listener(topic, b"x", 1, False, False, client_id)


def test_the_router_gives_each_board_its_own_messages():
    broker = _FakeBroker()
    router = TelemetryRouter(broker)
    a, b = router.telemetry("st-f1-0"), router.telemetry("st-f1-1")
    broker.send("hil/st-f1-0/telemetry", client_id="st-f1-0")     # the publisher's id
    broker.send("stations/st-f1-1/reading")                        # no id: a level of its topic
    broker.send("hil/st-f1-1/cmd", client_id="hil-telemetry-1")    # the test commanding a board
    broker.send("elsewhere/topic", client_id="someone")
    assert [m.topic for m in a.messages] == ["hil/st-f1-0/telemetry"]
    assert [m.topic for m in b.messages] == ["stations/st-f1-1/reading", "hil/st-f1-1/cmd"]
    assert (router.routed, router.unrouted) == (3, 1)
    assert router.take_touched() == {"st-f1-0", "st-f1-1"} and router.take_touched() == set()
    a.close()
    broker.send("hil/st-f1-0/telemetry", client_id="st-f1-0")
    assert len(a.messages) == 1 and router.unrouted == 2
    router.close()
    assert broker.listeners == []
