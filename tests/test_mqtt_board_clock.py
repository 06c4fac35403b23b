"""Board times that arrive after their messages: Telemetry and Outage wait on the simulator's
reports (Simulator.wait_until) for the board's record of each publish. A real Simulator, with
the test playing the board on its control channel."""

from __future__ import annotations

import json
import socket
import threading
import time
from types import SimpleNamespace

import pytest

from micropython_hil.mqtt import Outage, Telemetry, make_broker
from micropython_hil.sim.simulator import Simulator


class FakeBoard:
    """The board's end of the simulator's control channel: says hello, then reports."""

    def __init__(self, sim: Simulator) -> None:
        env = sim.env()
        host, port = env["MPSIM_CHANNEL"].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.send({"t": "hello", "token": env["MPSIM_TOKEN"]})

    def send(self, record: dict) -> None:
        self.sock.sendall(json.dumps(record).encode() + b"\n")

    def published(self, topic: str, board_time_us: int) -> None:
        self.send({"t": "pub", "topic": topic, "c": board_time_us, "len": 1})

    def later(self, seconds: float, *reports: tuple[str, int]) -> threading.Timer:
        """Report these publishes `seconds` from now, while the harness waits for them."""
        timer = threading.Timer(seconds, lambda: [self.published(*report) for report in reports])
        timer.start()
        return timer

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def world():
    with make_broker("amqtt").start() as broker, Telemetry(broker) as telemetry, \
            Simulator(time_mode="fast") as sim:
        board = FakeBoard(sim)
        client = broker.client("dev")
        yield SimpleNamespace(broker=broker, telemetry=telemetry, sim=sim, board=board, client=client)
        client.close()
        board.close()


def test_board_times_are_awaited_on_the_simulators_reports(world):
    world.telemetry.attach_board_clock(world.sim, "dev")
    for i in range(3):
        world.client.publish("dev/t", f"{i}", qos=1)
    messages = world.telemetry.collect(3, "dev/t")
    world.telemetry.await_board_times(messages, timeout=0.2)
    assert [m.board_time_us for m in messages] == [None] * 3  # the records have not come yet
    world.board.later(0.3, *[("dev/t", 1_000_000 * (i + 1)) for i in range(3)])
    started = time.monotonic()
    world.telemetry.await_board_times(messages, timeout=10)
    assert time.monotonic() - started < 5  # woken by the reports, not by the timeout
    assert [m.board_time_us for m in messages] == [1_000_000, 2_000_000, 3_000_000]
    assert world.telemetry.assert_rate("dev/t", every=1.0, tolerance=0.001, clock="board") == [1.0, 1.0]


def test_without_a_board_clock_nothing_is_awaited(world):
    world.client.publish("dev/t", "x", qos=1)
    message = world.telemetry.expect("dev/t")
    started = time.monotonic()
    world.telemetry.await_board_times([message], timeout=10)
    assert time.monotonic() - started < 1 and message.board_time_us is None


def test_back_online_is_measured_on_the_board_clock_once_the_simulator_reports_it(world):
    world.board.send({"t": "idle", "c": 5_000_000})  # the board's clock reads 5 s
    assert world.sim.wait_until(lambda: world.sim.board_time_us == 5_000_000, timeout=5)
    device = SimpleNamespace(client_id="dev", board=SimpleNamespace(sim=world.sim), topic=lambda name: f"d/{name}")
    with Outage(world.telemetry, device) as outage:
        world.client.publish("d/status", "offline", qos=1)
    world.client.publish("d/status", "online", qos=1)
    world.telemetry.expect("d/status", where=lambda m: m.text == "online")
    world.board.later(0.3, ("d/status", 7_500_000))  # its record comes after the message
    assert outage.assert_back_online(within=5) == pytest.approx(2.5)
