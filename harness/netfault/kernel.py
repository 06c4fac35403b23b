"""Kernel-level faults on a simulated board's own network: packet loss, a rate limit and the
link going down, below TCP, where the fault proxy (proxy.py) cannot reach.

A `KernelLink` gives a board process its own network namespace (namespace.py) in which it still
dials 127.0.0.1, as every board config says, but nothing there answers locally: its routing
sends loopback destinations out over veth links to the host's loopback, where the broker, the
fault proxy, the cloud endpoint and the simulator listen (route_localnet on each end lets the
kernel route 127.0.0.0/8 over them; no NAT). Two paths:

    board ns                      air ns (the WiFi)                 host
    wlan0 ------------------------ wlan  ~~ faults ~~  uplink ------ hilu<id> -> 127.0.0.1
    wire  ------------------------------------------------------------ hilw<id> -> 127.0.0.1

The WiFi path crosses a second namespace, the "air", which forwards between board and host:
loss is an nftables rule on its forward path (`numgen random`), so a dropped packet is lost in
transit, as over the air, and no sender's socket sees an error; the rate limit is a tbf qdisc on
the air's egress; `down()` sets the air's end of the board's link down, so the board's interface
loses carrier under its open sockets, as when the access point vanishes. The wire carries only
the host ports given to `wire_port` (the simulator's control channel, like a board's USB cable)
and is never faulted. Delay and jitter stay with the fault proxy (no netem in this kernel); the
two compose: point the board at a proxy and fault both.

Everything lives in the two namespaces and on their veth links, which the kernel removes when
the namespaces' processes end, so a SIGKILLed run leaves nothing in the host's network.

The board's side may also be a namespace the harness does not hold: `KernelLink(netns_of=PID)`
wires the namespace of a container's first process (a docker board: container_board.py), which
ends with the container.
"""

from __future__ import annotations

import itertools
import random
import re
import secrets
import shlex
import threading
from pathlib import Path
from typing import Callable

from .. import tempdirs
from ..errors import NetFaultError
from ..tether import Tether
from .conditions import DOWN, UP, directions
from .namespace import NetNamespace, ProcessNamespace, run, unavailable

__all__ = ["KernelLink", "KernelFault", "unavailable"]

_ids = itertools.count(1)
_RULES_IN_USE = re.compile(r"169\.254\.(\d+)\.(\d+)")


class KernelFault:
    """A kernel fault in force on a link; ends with clear() or at the end of its `with` block."""

    def __init__(self, link: "KernelLink", kind: str, detail: str, on_clear: Callable[[], None],
                 counter: Callable[[], int] | None = None) -> None:
        self.link, self.kind, self.detail = link, kind, detail
        self.active = True
        self._on_clear, self._counter = on_clear, counter
        self._dropped_at_clear = 0

    @property
    def dropped(self) -> int:
        """Packets this fault dropped (so far, or until it was cleared): loss only, else 0."""
        if self._counter is None:
            return 0
        return self._counter() if self.active else self._dropped_at_clear

    def clear(self) -> None:
        self.link._end(self)

    def __enter__(self) -> "KernelFault":
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()

    def __repr__(self) -> str:
        return f"<KernelFault {self.kind} {self.detail} on {self.link.name}{'' if self.active else ' (cleared)'}>"


class KernelLink:
    """A board's own network namespace, its WiFi link to the host through the air namespace,
    and the wire for its control channel. Use as a context manager, or start() and close()."""

    def __init__(self, name: str | None = None, netns_of: int | None = None) -> None:
        """`netns_of`: the pid of a process whose network namespace is the board's (a
        container's first process), wired as the board side instead of a namespace of our own."""
        self.name = name or f"link{next(_ids)}"
        self.netns_of = netns_of
        tag = secrets.token_hex(3)
        self.host_interfaces = (f"hilu{tag}", f"hilw{tag}")  # uplink, wire: in the host's namespace
        self.addresses: dict[str, str] = {}
        self.faults: list[KernelFault] = []
        self.wired_ports: list[int] = []
        self._lock = threading.Lock()
        self._tether: Tether | None = None
        self._board: NetNamespace | None = None
        self._air: NetNamespace | None = None
        self._dir: Path | None = None
        self._chains = itertools.count(1)

    # -- lifecycle
    def start(self) -> "KernelLink":
        if self._board is not None:
            return self
        reason = unavailable()
        if reason:
            raise NetFaultError(f"kernel link {self.name}: {reason}")
        self._tether = Tether(f"hil-netns-{self.name}")
        try:
            self._board = (NetNamespace(f"{self.name}/board", self._tether) if self.netns_of is None
                           else ProcessNamespace(f"{self.name}/board", self.netns_of))
            self._air = NetNamespace(f"{self.name}/air", self._tether)
            self._wire_up(self._pick_addresses())
        except BaseException:
            self.close()
            raise
        return self

    @staticmethod
    def _pick_addresses() -> dict[str, str]:
        """Six link-local addresses in a /29 no route of the host uses yet."""
        used = run(["ip", "-4", "-o", "route", "show", "table", "all"]) + run(["ip", "-4", "-o", "addr"])
        taken = {(int(a), int(b) // 8) for a, b in _RULES_IN_USE.findall(used)}
        for _ in range(1000):
            third, block = random.choice([n for n in range(1, 255) if n != 169]), random.randrange(32)
            if (third, block) not in taken:
                base = f"169.254.{third}."
                names = ["host_up", "air_up", "air_wlan", "board_wlan", "host_wire", "board_wire"]
                return {name: base + str(block * 8 + i) for i, name in enumerate(names, start=1)}
        raise NetFaultError("no free link-local /29 left in 169.254.0.0/16 for a kernel link")

    def _wire_up(self, a: dict[str, str]) -> None:
        uplink, wire = self.host_interfaces
        board, air = self._board, self._air
        # The host's ends: veth pairs whose other ends are born inside the namespaces.
        run(["ip", "link", "add", uplink, "type", "veth", "peer", "name", "uplink", "netns", str(air.pid)])
        run(["ip", "link", "add", wire, "type", "veth", "peer", "name", "wire", "netns", str(board.pid)])
        for dev in (uplink, wire):
            Path(f"/proc/sys/net/ipv4/conf/{dev}/route_localnet").write_text("1")
            ipv6 = Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6")
            if ipv6.exists():
                ipv6.write_text("1")
        run(["ip", "-batch", "-"], input="\n".join([
            f"addr add {a['host_up']} peer {a['air_up']} dev {uplink}",
            f"addr add {a['host_wire']} peer {a['board_wire']} dev {wire}",
            f"link set {uplink} up", f"link set {wire} up",
            f"route add {a['board_wlan']}/32 via {a['air_up']} dev {uplink}"]) + "\n", what=f"{self.name}: host side")
        # Each namespace accepts 127.0.0.0/8 on its links (route_localnet), replies from the host's
        # 127.0.0.1 (accept_local, no reverse-path filter), and looks loopback destinations up in
        # table 100 before its own local table.
        accept = ("for d in all default {devs}; do c=/proc/sys/net/ipv4/conf/$d; echo 0 > $c/rp_filter; "
                  "echo 1 > $c/route_localnet; echo 1 > $c/accept_local; done")
        air.script("\n".join([
            f"ip link add wlan type veth peer name wlan0 netns {board.pid}",
            accept.format(devs="uplink wlan"),
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
            "ip link set lo up",
            f"ip addr add {a['air_up']} peer {a['host_up']} dev uplink",
            f"ip addr add {a['air_wlan']} peer {a['board_wlan']} dev wlan",
            "ip link set uplink up", "ip link set wlan up",
            f"ip route add 127.0.0.0/8 via {a['host_up']} dev uplink table 100",
            "ip rule add pref 100 iif wlan to 127.0.0.0/8 lookup 100",
            "ip rule add pref 32000 lookup local", "ip rule del pref 0",
            "nft add table inet hil"]))
        board.script("\n".join([
            accept.format(devs="wlan0 wire"),
            "ip link set lo up",
            f"ip addr add {a['board_wlan']} peer {a['air_wlan']} dev wlan0",
            f"ip addr add {a['board_wire']} peer {a['host_wire']} dev wire",
            "ip link set wlan0 up", "ip link set wire up",
            f"ip route add 127.0.0.0/8 via {a['air_wlan']} dev wlan0 src {a['board_wlan']} table 100",
            f"ip route add 127.0.0.0/8 via {a['host_wire']} dev wire src {a['board_wire']} table 101",
            "ip rule add pref 110 to 127.0.0.0/8 lookup 100",
            "ip rule add pref 32000 lookup local", "ip rule del pref 0"]))
        self.addresses = a

    def wire_port(self, port: int) -> None:
        """Connections to this host loopback port take the wire, never faulted, instead of the
        WiFi link (the simulator's control channel: a board's USB cable, not its radio)."""
        self._check_started()
        self._board.run(["ip", "rule", "add", "pref", "100", "to", "127.0.0.0/8", "ipproto", "tcp",
                         "dport", str(int(port)), "lookup", "101"])
        self.wired_ports.append(int(port))

    def launcher(self, binary: str) -> str:
        """An executable that runs `binary` with its arguments inside the board's namespace (for
        --micropython / UnixBoard.open(micropython=...)): the same process, pid and signals."""
        self._check_started()
        if self._dir is None:
            self._dir = tempdirs.make_temp_dir("netns")
        script = self._dir / f"{Path(binary).name}-in-{self.name.replace('/', '-')}"
        script.write_text(f"#!/bin/sh\nexec {shlex.join(self._board.argv([binary]))} \"$@\"\n")
        script.chmod(0o755)
        return str(script)

    def run(self, argv: list[str]) -> str:
        """Run a command in the board's namespace (e.g. `ip -s link`); its output."""
        self._check_started()
        return self._board.run(argv)

    def close(self) -> None:
        """End both namespaces (the board's process must be gone first: it keeps its own alive)
        and remove the launcher's folder. The host's ends of the links go with the namespaces."""
        with self._lock:
            for fault in self.faults:
                fault.active = False
            self.faults.clear()
        for ns in (self._air, self._board):
            if ns is not None:
                ns.close()
        self._air = self._board = None
        if self._tether is not None:
            self._tether.close()
            self._tether = None
        if self._dir is not None:
            tempdirs.remove(self._dir)
            self._dir = None

    def __enter__(self) -> "KernelLink":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.addresses.get("board_wlan", "not started")
        return f"<KernelLink {self.name} board {where}, faults {[f.kind for f in self.faults]}>"

    def _check_started(self) -> None:
        if self._board is None:
            raise NetFaultError(f"kernel link {self.name} is not started")

    # -- faults
    def _begin(self, fault: KernelFault) -> KernelFault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _end(self, fault: KernelFault) -> None:
        with self._lock:
            if not fault.active:
                return
            fault.active = False
            self.faults.remove(fault)
        if self._air is not None:
            if fault._counter is not None:
                fault._dropped_at_clear = fault._counter()
            fault._on_clear()

    def _busy(self, kind: str, dirs: tuple[str, ...]) -> None:
        for fault in self.faults:
            if fault.kind == kind and (kind == "down" or set(dirs) & set(fault.detail.split("+"))):
                raise NetFaultError(f"kernel link {self.name}: a {kind} fault ({fault.detail}) is already in "
                                    f"force; clear it first")

    def loss(self, percent: float, direction: str = "both") -> KernelFault:
        """Drop this percentage of packets at random on the WiFi path, in transit (up: board to
        host, down: host to board). TCP retransmits; a lost MQTT packet costs a retransmission
        timeout, not a message."""
        self._check_started()
        dirs = directions(direction)
        if not 0 <= percent <= 100:
            raise NetFaultError(f"kernel link {self.name}: loss of {percent}% is not a percentage")
        chain = f"loss{next(self._chains)}"
        match = {UP: 'iifname "wlan"', DOWN: 'oifname "wlan"'}
        threshold = round(percent * 100)  # in 1/10000
        self._air.run(["nft", "-f", "-"], input="\n".join(
            [f"add chain inet hil {chain} {{ type filter hook forward priority 0; policy accept; }}"] +
            [f"add rule inet hil {chain} {match[d]} numgen random mod 10000 < {threshold} counter drop"
             for d in dirs]) + "\n")

        def dropped() -> int:
            listing = self._air.run(["nft", "list", "chain", "inet", "hil", chain])
            return sum(int(n) for n in re.findall(r"counter packets (\d+)", listing))

        def clear() -> None:
            self._air.run(["nft", "-f", "-"], input=f"flush chain inet hil {chain}\ndelete chain inet hil {chain}\n")

        return self._begin(KernelFault(self, "loss", f"{percent:g}% {'+'.join(dirs)}", clear, dropped))

    def rate(self, bytes_per_s: float, direction: str = "both") -> KernelFault:
        """Limit the WiFi path to this many bytes per second (a tbf qdisc on the air's egress:
        packets beyond its queue are dropped, as a congested radio drops them)."""
        self._check_started()
        dirs = directions(direction)
        if bytes_per_s <= 0:
            raise NetFaultError(f"kernel link {self.name}: rate {bytes_per_s} B/s must be positive")
        self._busy("rate", dirs)
        devices = {UP: "uplink", DOWN: "wlan"}
        burst = max(4 * 1514, int(bytes_per_s / 50))
        for d in dirs:
            self._air.run(["tc", "qdisc", "replace", "dev", devices[d], "root", "tbf", "rate",
                           f"{int(bytes_per_s)}bps", "burst", str(burst), "latency", "1s"])

        def clear() -> None:
            for d in dirs:
                self._air.run(["tc", "qdisc", "del", "dev", devices[d], "root"])

        return self._begin(KernelFault(self, "rate", "+".join(dirs), clear))

    def down(self) -> KernelFault:
        """Take the WiFi link down under the board's open sockets: its interface loses carrier
        (the access point vanished), packets go nowhere, nothing is closed; up again at clear()."""
        self._check_started()
        self._busy("down", ())
        self._air.run(["ip", "link", "set", "wlan", "down"])
        return self._begin(KernelFault(self, "down", "wlan", lambda: self._air.run(["ip", "link", "set", "wlan", "up"])))

    def clear_faults(self) -> None:
        """End every fault in force."""
        for fault in list(self.faults):
            fault.clear()
