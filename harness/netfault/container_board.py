"""A docker board (board/docker_board.py) on its own network: its container's namespace wired
by a KernelLink (kernel.py), as a namespaced board's is. The board dials 127.0.0.1 as every
board config says and reaches the host's broker, fault proxy and cloud over its WiFi path (where
loss, rate limits and link-down apply: `board.network.loss(10)`), and its simulator's control
channel over the wire, never faulted.

    board = open_docker_board(sim)          # DOCKER_HOST's engine, or engine=Engine(url)
    with board.network.down():
        ...
    board.close()                           # the process, the container, the link

Importing this module (micropython_hil.netfault does) registers link_container as the network of
docker boards that open_board("docker:PROFILE") opens.
"""

from __future__ import annotations

from typing import Any, Callable

from ..board.board import DEFAULT_TIMEOUT
from ..board.docker_board import DockerBoard, wire_spec_boards
from ..containers.engine import Engine
from .kernel import KernelLink


def channel_port(sim: Any) -> int:
    """The host port of a simulator's control channel (where each launch connects)."""
    return int(sim.env()["MPSIM_CHANNEL"].rpartition(":")[2])


def link_container(sim: Any, name: str) -> Callable[[int], KernelLink]:
    """The `network` hook of DockerBoard.open: a started KernelLink around the container's
    namespace, the simulator's channel (if any) on its wire."""

    def wire(pid: int) -> KernelLink:
        link = KernelLink(name, netns_of=pid).start()
        try:
            if sim is not None:
                link.wire_port(channel_port(sim))
        except BaseException:
            link.close()
            raise
        return link

    return wire


def open_docker_board(sim: Any = None, engine: Engine | str | None = None, name: str | None = None,
                      timeout: float = DEFAULT_TIMEOUT) -> DockerBoard:
    """A simulated board in a container on `engine` (default DOCKER_HOST's), its network a
    KernelLink (`board.network`); NetFaultError where namespaces cannot be wired (not root)."""
    return DockerBoard.open(sim=sim, engine=engine, name=name, timeout=timeout,
                            network=link_container(sim, name or "docker-board"))


# Boards opened from their spec (open_board("docker:PROFILE"), `hil --board docker:...`, roles) get
# the same network as open_docker_board's.
wire_spec_boards(link_container)
