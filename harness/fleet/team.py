"""Several boards in one test, by role: a wall switch and the relay it drives, a gateway and its
sensors. Each role has its own board (simulated or real), client id, console and firmware, and
starts that firmware pointed at the test's broker; the roles and the test synchronise through
`sync` (sync.py, hilsync.py on the boards).

    @pytest.mark.boards(switch="firmware_under_test/wall_switch",
                        relay="firmware_under_test/home_automation")
    def test_press(boards, telemetry):
        relay = boards.relay.start()
        boards.switch.start(extra={"target_topic": boards.relay.topic("cmd")})
        boards.switch.sim.pin(4).pulse(0)
        telemetry.expect(boards.relay.topic("state"), where={"relays": [True, False]})

The `boards` fixture (plugin/roles.py) opens the boards, one per role, as `--board` assigns them
(assign.py); `Boards` and `Role` work without pytest too, over boards the caller opened.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

from ..board.board import Board
from ..deploy import packages
from ..deploy.firmware import LOCK_FILE, Device, Firmware
from ..errors import HarnessError
from ..deploy.device_start import DeviceSetup, device_setup, device_tls, new_client_id, start_device
from .sync import TEST_PARTY, Sync, device_settings, new_base


class Role:
    """One role: its board, its firmware, its client id, and the device once started."""

    def __init__(self, team: "Boards", name: str, board: Board, firmware: Firmware | None,
                 client_id: str | None = None) -> None:
        self.team = team
        self.name = name
        self.board = board
        self.firmware = firmware
        self.client_id = client_id or new_client_id(name, "r")
        self.device: Device | None = None
        self._last: dict[str, Any] = {}

    @property
    def sim(self) -> Any:
        """The role's Simulator, or None on a real board."""
        return self.board.sim

    @property
    def simulated(self) -> bool:
        return self.board.sim is not None

    @property
    def console(self) -> Any:
        return self.board.console

    def describe(self) -> str:
        """How messages name this role: "relay (board relay[unix], client relay-r2)"."""
        return f"{self.name} (board {self.board.name}, client {self.client_id})"

    def topic(self, name: str) -> str:
        """One of this role's topics ("hil/<client id>/<name>", or the firmware's own scheme),
        known before its firmware starts, so another role can be pointed at it."""
        if self.device is not None:
            return self.device.topic(name)
        topics = self.firmware.topics if self.firmware is not None else {}
        return Device(self.board, self.firmware, None, self.client_id, f"hil/{self.client_id}",
                      topics=topics).topic(name)

    def setup_for(self, firmware: Firmware | None = None, **settings: Any) -> DeviceSetup:
        """This role's config for its firmware (what start() writes), with hilsync's settings."""
        chosen = self._firmware(firmware)
        client_id = settings.pop("client_id", None) or self.client_id
        extra = dict(settings.pop("extra", None) or {})
        extra.setdefault("hilsync", device_settings(self.team.sync_base, self.name, self.team.parties,
                                                    _sync_client_id(client_id)))
        return device_setup(chosen, self.team.broker, client_id, extra=extra, wifi=self.team.wifi,
                            tls=device_tls(self.team.broker, client_id), **settings)

    def start(self, *, extra: dict | None = None, via: Any = None, cloud: Any = None, keepalive: int = 30,
              files: dict[str, Any] | None = None, topics: dict[str, str] | None = None,
              firmware: Firmware | None = None, client_id: str | None = None) -> Device:
        """Deploy this role's firmware with a config naming the test's broker (or `via`, a fault
        proxy in front of it) and run main.py; the Device. Arguments as start_firmware's."""
        settings = dict(extra=extra, via=via, cloud=cloud, keepalive=keepalive, files=files, topics=topics,
                        client_id=client_id)
        chosen = self._firmware(firmware)
        setup = self.setup_for(chosen, **settings)
        self.client_id = setup.client_id
        self.device = start_device(self.board, chosen, setup, telemetry=self.team.telemetry)
        self._last = dict(settings, firmware=chosen)
        return self.device

    def stop(self) -> None:
        """Stop the firmware (KeyboardInterrupt, the REPL taken back)."""
        self.board.stop()

    def restart(self, hard: bool = True) -> Device:
        """Stop, reset the board (hard: a power cycle; the unix port restarts) and start the
        firmware again as it was last started: same client id, same settings."""
        if not self._last:
            raise HarnessError(f"{self.describe()}: restart() before start()")
        self.board.stop()
        self.board.reset(hard=hard)
        return self.start(**self._last)

    def _firmware(self, firmware: Firmware | None) -> Firmware:
        chosen = firmware or self.firmware
        if chosen is None:
            raise HarnessError(f"role {self.name!r} has no firmware: name its folder in the boards marker "
                               f"({self.name}='path/to/firmware') or pass start(firmware=...)")
        return chosen

    def __repr__(self) -> str:
        return f"<Role {self.describe()}>"


class Boards:
    """The roles of one test: `boards.relay`, `boards["relay"]`, iteration in marker order."""

    def __init__(self, broker: Any, telemetry: Any = None, wifi: tuple[str, Any] | None = None) -> None:
        self.broker = broker
        self.telemetry = telemetry  # messages of simulated roles get board times, when given
        self.wifi = wifi
        self.sync_base = new_base()
        self._roles: dict[str, Role] = {}
        self._sync: Sync | None = None
        self._lock = threading.Lock()

    def add(self, name: str, board: Board, firmware: Firmware | None = None,
            client_id: str | None = None) -> Role:
        if name in self._roles:
            raise HarnessError(f"role {name!r} is already on {self._roles[name].board.name}")
        if name == TEST_PARTY:
            raise HarnessError(f"{TEST_PARTY!r} names the test itself in hilsync: choose another role name")
        role = Role(self, name, board, firmware, client_id)
        self._roles[name] = role
        return role

    # -- access ------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Role:
        try:
            return self._roles[name]
        except KeyError:
            raise KeyError(f"no role {name!r} in this test (roles: {', '.join(self._roles)})") from None

    def __getattr__(self, name: str) -> Role:
        roles = self.__dict__.get("_roles", {})
        if name in roles:
            return roles[name]
        raise AttributeError(f"no role {name!r} in this test (roles: {', '.join(roles) or 'none'})")

    def __iter__(self) -> Iterator[Role]:
        return iter(list(self._roles.values()))

    def __len__(self) -> int:
        return len(self._roles)

    def __contains__(self, name: object) -> bool:
        return name in self._roles

    @property
    def names(self) -> list[str]:
        return list(self._roles)

    @property
    def parties(self) -> list[str]:
        """Who takes part in barriers by default: every role, and the test."""
        return [*self._roles, TEST_PARTY]

    # -- starting ----------------------------------------------------------------------------
    def start_all(self, settings: dict[str, dict] | None = None, **common: Any) -> dict[str, Device]:
        """Start every role's firmware at once (a thread each); `settings[role]` on top of
        `common` (start()'s arguments). The first failure is raised after all have returned."""
        settings = settings or {}
        unknown = set(settings) - set(self._roles)
        if unknown:
            raise HarnessError(f"start_all: no role {', '.join(sorted(unknown))} (roles: {', '.join(self._roles)})")
        for role in self._roles.values():  # one at a time: fetching a package is not safe from two threads
            chosen = settings.get(role.name, {}).get("firmware") or common.get("firmware") or role.firmware
            if chosen is not None:
                prefetch(chosen)
        with ThreadPoolExecutor(max_workers=max(1, len(self._roles))) as pool:
            futures = {name: pool.submit(role.start, **{**common, **settings.get(name, {})})
                       for name, role in self._roles.items()}
        return {name: future.result() for name, future in futures.items()}

    # -- synchronisation -----------------------------------------------------------------------
    @property
    def sync(self) -> Sync:
        """The test's side of hilsync (connected on first use)."""
        with self._lock:
            if self._sync is None:
                self._sync = Sync(self.broker, self.sync_base, self.parties, describe=self._describe)
            return self._sync

    def _describe(self, party: str) -> str:
        role = self._roles.get(party)
        return role.describe() if role is not None else party

    # -- the end ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the sync client (its retained topics cleared). The boards are their opener's."""
        with self._lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()

    def __repr__(self) -> str:
        return f"<Boards {', '.join(r.describe() for r in self._roles.values())}>"


def prefetch(firmware: Firmware) -> None:
    """Fetch the MicroPython packages `firmware` declares into the local cache (and its lock
    file), so that boards staging it at once in several threads find them there: packages.py
    writes a package it fetches under a name unique to the process, not to the thread."""
    named = [spec for spec in firmware.packages if not spec.startswith((".", "/"))]
    if named:
        packages.resolve(named, lock=firmware.path / LOCK_FILE)


def _sync_client_id(client_id: str) -> str:
    """The client id a board's hilsync connects with, beside the firmware's own."""
    return client_id[:21] + "-s"
