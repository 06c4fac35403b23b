"""Start-up costs of the docker slice, each beside the path it replaces, in the same run:

- a broker in a container (this machine's mosquitto as an image, `--broker docker:...`) from
  start() to its first CONNACK, against the embedded amqtt and a local mosquitto process;
- a simulated board in a container (`--board docker`: a container of its own, its namespace
  wired by a KernelLink, the unix port launched by `docker exec` with a tty pumped to a host pty)
  ready at the raw REPL, and its exec round trip (`container_board_ready_ms`,
  `container_exec_rtt_p50_ms`), beside a local unix board (`local_board_ready_ms`,
  `local_exec_rtt_p50_ms`) and a board in a network namespace of its own (`netns_*`).

Without a docker engine the broker and container figures are null and `docker_unavailable` says
why; without root the namespace and container board figures are null likewise. Last line: JSON.

    python benchmarks/bench_docker.py [--starts 5] [--execs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from micropython_hil.board.unix_board import UnixBoard  # noqa: E402
from micropython_hil.containers import Engine, mosquitto_image  # noqa: E402
from micropython_hil.mqtt.broker import AmqttBroker, MosquittoBroker  # noqa: E402
from micropython_hil.mqtt.docker_broker import DockerBroker  # noqa: E402
from micropython_hil.board.board_image import board_image  # noqa: E402
from micropython_hil.netfault.container_board import open_docker_board  # noqa: E402
from micropython_hil.netfault.kernel import KernelLink, unavailable  # noqa: E402
from micropython_hil.plugin.netns import open_netns_board  # noqa: E402
from micropython_hil.sim.simulator import Simulator  # noqa: E402


def ready_seconds(make, starts: int) -> list[float]:
    """Seconds from start() until a harness client is answered, per start."""
    out = []
    for _ in range(starts):
        t = time.perf_counter()
        broker = make().start()
        with broker.client() as client:
            client.ping()
        out.append(time.perf_counter() - t)
        broker.stop()
    return out


def exec_rtts(board, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        board.exec("x = 1")
        out.append(time.perf_counter() - t)
    return out


def board_figures(open_board, starts: int, execs: int) -> tuple[float, float]:
    """(median ready ms, exec round trip p50 ms) of boards made by open_board() -> (board, close)."""
    ready, rtts = [], []
    for i in range(starts):
        t = time.perf_counter()
        board, close = open_board()
        try:
            board.exec("pass")
            ready.append(time.perf_counter() - t)
            if i == 0:
                rtts = exec_rtts(board, execs)
        finally:
            close()
    return statistics.median(ready) * 1e3, statistics.median(rtts) * 1e3


def local_board():
    sim = Simulator()
    board = UnixBoard.open(sim=sim)

    def close():
        board.close()
        sim.close()
    return board, close


def netns_board():
    link = KernelLink().start()
    sim = Simulator()
    board = open_netns_board(link, sim)

    def close():
        board.close()
        sim.close()
        link.close()
    return board, close


def container_board():
    sim = Simulator()
    board = open_docker_board(sim)

    def close():
        board.close()
        sim.close()
    return board, close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--execs", type=int, default=200)
    args = parser.parse_args()
    result: dict = {"starts": args.starts}

    result["amqtt_ready_s"] = statistics.median(ready_seconds(AmqttBroker, args.starts))
    result["mosquitto_process_ready_s"] = (None if MosquittoBroker.available() else
                                           statistics.median(ready_seconds(MosquittoBroker, args.starts)))
    why = Engine.unavailable()
    result["docker_unavailable"] = why
    if why is None:
        with Engine() as engine:
            t = time.perf_counter()
            reference = mosquitto_image(engine)  # imported on the first run on an engine, checked after
            result["mosquitto_image_check_s"] = time.perf_counter() - t
        ready = ready_seconds(lambda: DockerBroker(image=reference), args.starts)
        result["broker_container_ready_s"] = statistics.median(ready)
        result["broker_container_ready_max_s"] = max(ready)
    else:
        result["broker_container_ready_s"] = None

    result["local_board_ready_ms"], result["local_exec_rtt_p50_ms"] = board_figures(local_board, args.starts, args.execs)
    result["netns_unavailable"] = unavailable()
    if result["netns_unavailable"] is None:
        t = time.perf_counter()
        KernelLink().start().close()
        result["kernel_link_start_ms"] = (time.perf_counter() - t) * 1e3
        result["netns_board_ready_ms"], result["netns_exec_rtt_p50_ms"] = board_figures(netns_board, args.starts,
                                                                                        args.execs)
    if why is None and result["netns_unavailable"] is None:
        with Engine() as engine:
            t = time.perf_counter()
            board_image(engine)  # imported on the first run on an engine, checked after
            result["board_image_check_s"] = time.perf_counter() - t
        result["container_board_ready_ms"], result["container_exec_rtt_p50_ms"] = board_figures(
            container_board, args.starts, args.execs)
    else:
        result["container_board_ready_ms"] = result["container_exec_rtt_p50_ms"] = None
    for key, value in result.items():
        if isinstance(value, float):
            result[key] = round(value, 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
