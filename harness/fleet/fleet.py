"""A fleet: N simulated boards running one firmware, started in parallel, each with its own
sensor values, checked board by board and as a whole.

    fleet = Fleet.start(broker, Firmware("firmware_under_test/weather_station"), 200,
                        values=lambda i: {"sensors": {"bme280@0x76": {"temperature": 15 + i % 10}}},
                        extra={"interval_s": 1})
    fleet.expect_online(timeout=30)                       # every board, or the ones that did not
    fleet.collect(10, "telemetry", timeout=30)            # ten readings from every board
    fleet.assert_rates("telemetry", every=1, clock="board")
    fleet.assert_none_lost("telemetry")                   # its "seq" field: no gap, no duplicate
    fleet[17].telemetry.expect(fleet[17].topic("status")) # one board's own Telemetry
    fleet.close()

Over Docker engines (`engines=["unix:///var/run/docker.sock", "unix:///run/dockerd-b.sock"]`, or
`--fleet-engine URL` repeated): board i runs in a container on engine i mod len(engines)
(netfault/container_board.py: a docker board on its own network), its flash still a folder here
(bind-mounted), its telemetry gathered as for local boards; `fleet.placement()` counts the boards
per engine. The engines must be on this machine (their sockets, or tcp:// on loopback).

Starting: the firmware is staged once; each board (a thread pool of `workers`) gets a
Simulator wired as the firmware's manifest says plus `values(i)` (the manifest's "wiring"
format), its files copied straight into its flash folder (a simulated board's flash is a host
folder: no REPL round trips per file), /hil_config.json naming the broker, and main.py run.
Each board has its own client id ("weather-f1-17") and its own Telemetry (router.py); the
process's file-descriptor limit is raised first if the fleet needs it (limits.py), and boards
are read with poll(), not select() (board/transport.py), so hundreds fit in one process.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Sequence

import jsonschema

from .. import tempdirs
from ..board.board import Board
from ..containers.engine import Engine
from ..deploy.device_config import CONFIG_FILE, SCHEMA
from ..deploy.firmware import Device, Firmware
from ..errors import HarnessError, TelemetryError
from ..mqtt.telemetry import Message, Telemetry, Where
from ..netfault.container_board import open_docker_board
from ..sim.simulator import Simulator
from ..sim.wiring import apply_wiring
from ..deploy.device_start import DeviceSetup, device_setup, device_tls, new_client_id
from .launcher import QuickLauncher
from .limits import ensure_fds
from .router import TelemetryRouter

Wiring = dict  # {"sensors": {"bme280@0x76": {"temperature": 21.5}}, "adc": {"34": 1.9}}
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
# Attaching a simulated part parses its file with `ast`, which CPython 3.11 can get wrong from two
# threads at once ("AST constructor recursion depth mismatch", python/cpython#106905): boards
# started in parallel are wired one at a time.
_WIRING = threading.Lock()


@dataclass
class FleetBoard:
    """One board of a fleet: index, board and simulator, client id, device, own telemetry."""

    index: int
    board: Board
    client_id: str
    device: Device
    telemetry: Telemetry
    engine: str | None = None  # the Docker engine whose container runs it; None: a local process

    @property
    def sim(self) -> Simulator:
        return self.board.sim

    @property
    def console(self) -> Any:
        return self.board.console

    def topic(self, name: str) -> str:
        """One of this board's topics (as Device.topic)."""
        return self.device.topic(name)

    def select(self, name: str, where: Where = None) -> list[Message]:
        """This board's recorded messages on one of its topics."""
        return self.telemetry.select(self.topic(name), where=where)

    def __repr__(self) -> str:
        return f"<FleetBoard #{self.index} {self.client_id}>"


class Fleet:
    """N simulated boards running one firmware; close() releases every one."""

    def __init__(self, broker: Any, firmware: Firmware) -> None:
        self.broker = broker
        self.firmware = firmware
        self.boards: list[FleetBoard] = []
        self.start_s: float | None = None  # wall seconds from the first launch to the last main.py running
        self.label = new_client_id(firmware.name, "f")
        self._router = TelemetryRouter(broker)
        self._staged: Path | None = None
        self._launcher: QuickLauncher | None = None
        self._engines: list[Engine] = []
        self._own_engines: list[Engine] = []  # connected here (given as URLs): closed at close()
        self._closed = False

    # -- starting ------------------------------------------------------------------------------
    @classmethod
    def start(cls, broker: Any, firmware: Firmware | str | Path, n: int, *,
              values: Callable[[int], Wiring] | None = None,
              extra: dict | Callable[[int], dict] | None = None, time_mode: str = "real",
              profile: str = "esp32", micropython: str | None = None, timeout: float = 10.0,
              workers: int | None = None, keepalive: int = 30, files: dict[str, Any] | None = None,
              topics: dict[str, str] | None = None, quick_start: bool = True,
              engines: Sequence[str | Engine] = ()) -> "Fleet":
        """Start `n` boards in parallel; the Fleet once every board runs its main.py.

        `values(i)`: board i's inputs in the manifest's "wiring" format, on top of the
        manifest's; `extra`: firmware settings, or a function of the index giving them;
        `files`/`topics`: as start_firmware's; `quick_start`: launch the unix port without
        CPython's site initialisation (launcher.py; an explicit `micropython` is run as it is);
        `engines`: Docker engines (URLs or Engines) to spread the boards over, in containers.
        A board that fails to start fails the whole start, naming it, after every board started
        so far is closed."""
        if n < 1:
            raise HarnessError(f"a fleet needs at least one board, not {n}")
        firmware = firmware if isinstance(firmware, Firmware) else Firmware(firmware)
        ensure_fds(n)
        fleet = cls(broker, firmware)
        try:
            fleet._stage()
            for engine in engines:
                if isinstance(engine, Engine):
                    fleet._engines.append(engine)
                else:
                    fleet._own_engines.append(Engine(engine))
                    fleet._engines.append(fleet._own_engines[-1])
            if quick_start and not fleet._engines:
                fleet._launcher = QuickLauncher(micropython)
                micropython = fleet._launcher.binary
            workers = workers or min(n, 4 * (os.cpu_count() or 2))
            begin = time.monotonic()
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{fleet.label}-start") as pool:
                futures = [pool.submit(fleet._start_one, i, values, extra, time_mode, profile, micropython,
                                       timeout, keepalive, files, topics) for i in range(n)]
                errors = []
                for i, future in enumerate(futures):
                    try:
                        fleet.boards.append(future.result())
                    except BaseException as e:  # noqa: BLE001 - re-raised below, after the others
                        errors.append((i, e))
            fleet.start_s = time.monotonic() - begin
            fleet.boards.sort(key=lambda member: member.index)
            if errors:
                i, first = errors[0]
                more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
                raise HarnessError(f"fleet {fleet.label}: board {i} of {n} did not start{more}: {first}") from first
        except BaseException:
            fleet.close()
            raise
        return fleet

    def _stage(self) -> None:
        self._staged = tempdirs.make_temp_dir("fleet-stage")
        self.firmware.stage(self._staged)

    def _start_one(self, i: int, values: Callable[[int], Wiring] | None, extra: Any, time_mode: str,
                   profile: str, micropython: str | None, timeout: float, keepalive: int,
                   files: dict[str, Any] | None, topics: dict[str, str] | None) -> FleetBoard:
        client_id = f"{self.label}-{i}"
        sim = Simulator(profile=profile, time_mode=time_mode)
        engine = self._engines[i % len(self._engines)] if self._engines else None
        try:
            wire(sim, self.firmware, values(i) if values is not None else None, f"fleet values({i})")
            if engine is not None:
                board = open_docker_board(sim, engine=engine, name=client_id, timeout=timeout)
            else:
                board = Board.unix(micropython=micropython, sim=sim, name=client_id, timeout=timeout)
        except BaseException:
            sim.close()
            raise
        try:
            settings = extra(i) if callable(extra) else extra
            setup = device_setup(self.firmware, self.broker, client_id, extra=settings, keepalive=keepalive,
                                 files=files, topics=topics, tls=device_tls(self.broker, client_id))
            self._write_flash(board, setup)
            telemetry = self._router.telemetry(client_id)
            telemetry.attach_board_clock(sim, client_id)
            run = board.run("main.py")
        except BaseException:
            board.close()
            sim.close()
            raise
        return FleetBoard(i, board, client_id, setup.device(board, self.firmware, run), telemetry,
                          engine.url if engine is not None else None)

    def _write_flash(self, board: Board, setup: DeviceSetup) -> None:
        """The staged firmware and its config files, written into the board's flash folder."""
        root = board.root
        shutil.copytree(self._staged, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(tempdirs.MARKER))
        errors = sorted(_VALIDATOR.iter_errors(setup.config), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(root)"
            raise HarnessError(f"device config {CONFIG_FILE} of {setup.client_id}: {where}: {errors[0].message}")
        (root / CONFIG_FILE).write_text(json.dumps(setup.config, separators=(",", ":")))
        for name, content in setup.files.items():
            path = root / PurePosixPath(name.strip("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)

    # -- access ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.boards)

    def __iter__(self) -> Iterator[FleetBoard]:
        return iter(self.boards)

    def __getitem__(self, index: int) -> FleetBoard:
        return self.boards[index]

    def by_client_id(self, client_id: str) -> FleetBoard:
        for member in self.boards:
            if member.client_id == client_id:
                return member
        raise KeyError(f"fleet {self.label} has no board {client_id!r}")

    def placement(self) -> dict[str | None, int]:
        """How many boards run on each Docker engine (by URL; None: local processes)."""
        counts: dict[str | None, int] = {}
        for member in self.boards:
            counts[member.engine] = counts.get(member.engine, 0) + 1
        return counts

    @property
    def router(self) -> TelemetryRouter:
        """Where the fleet's messages are routed to its boards (counts of routed/unrouted)."""
        return self._router

    # -- waiting for every board -------------------------------------------------------------
    def wait_each(self, check: Callable[[FleetBoard], bool], timeout: float) -> list[FleetBoard]:
        """Wait until `check(board)` holds for every board (re-checked for a board when a
        message of its arrives); the boards for which it still does not hold at the timeout."""
        router = self._router
        router.take_touched()
        pending = {m.client_id: m for m in self.boards if not check(m)}
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0 or not router.wait_touched(left):
                break
            for client_id in router.take_touched():
                member = pending.get(client_id)
                if member is not None and check(member):
                    del pending[client_id]
        return sorted(pending.values(), key=lambda m: m.index)

    def expect_online(self, timeout: float = 30.0, status: str = "status", payload: bytes = b"online") -> None:
        """Every board has published `payload` on its status topic; else TelemetryError naming
        the boards that have not."""
        late = self.wait_each(lambda m: bool(m.select(status, where=lambda msg: msg.payload == payload)), timeout)
        if late:
            raise self._failure(f"{len(late)} of {len(self)} boards did not publish {payload!r} on their "
                                f"{status!r} topic within {timeout:g} s", late)

    def collect(self, n: int, name: str, where: Where = None, timeout: float = 30.0) -> dict[int, list[Message]]:
        """Wait until every board has `n` messages on its topic `name`; the first `n` of each, by
        index. TelemetryError naming the boards short of them."""
        short = self.wait_each(lambda m: len(m.select(name, where)) >= n, timeout)
        if short:
            counts = ", ".join(f"{m.client_id}: {len(m.select(name, where))}" for m in short[:5])
            raise self._failure(f"{len(short)} of {len(self)} boards sent fewer than {n} messages on "
                                f"{name!r} within {timeout:g} s ({counts})", short)
        return {m.index: m.select(name, where)[:n] for m in self.boards}

    # -- checks, board by board ------------------------------------------------------------------
    def counts(self, name: str) -> dict[int, int]:
        """How many messages each board has sent on its topic `name`."""
        return {m.index: len(m.select(name)) for m in self.boards}

    def assert_rates(self, name: str, every: float, tolerance: float = 0.2, clock: str = "board",
                     min_count: int = 3, skip: int = 0) -> dict[int, list[float]]:
        """Each board's messages on `name` are `every` seconds apart (Telemetry.assert_rate, on
        each board's own record), after its first `skip` (a first reading that waited for the
        connection, say); the intervals by index, or TelemetryError naming the boards off."""
        def check(m: FleetBoard) -> list[float]:
            sent = m.select(name)
            since = sent[skip - 1] if 0 < skip <= len(sent) else 0
            return m.telemetry.assert_rate(m.topic(name), every=every, tolerance=tolerance, clock=clock,
                                           min_count=min_count, since=since)
        return self._each(check, f"rate of {name!r} (every {every:g} s +-{tolerance:.0%}, {clock} clock)")

    def sequences(self, name: str, field: str = "seq") -> dict[int, dict]:
        """Each board's sequence report on `name` (Telemetry.sequence: values, gaps, duplicates)."""
        return {m.index: m.telemetry.sequence(m.topic(name), field) for m in self.boards}

    def lost(self, name: str, field: str = "seq", first: int | None = 1) -> dict[int, int]:
        """Messages missing from each board's counter `field` on `name`: the gaps, and those
        before its first value seen when the counter starts at `first` (None: not counted)."""
        missing = {}
        for index, report in self.sequences(name, field).items():
            gone = sum(b - a - 1 for a, b in report["gaps"])
            if first is not None and report["values"]:
                gone += max(0, min(report["values"]) - first)
            missing[index] = gone
        return missing

    def assert_none_lost(self, name: str, field: str = "seq", first: int | None = 1, min_count: int = 1) -> None:
        """No board lost or duplicated a message on `name` (its counter `field`), and each sent
        at least `min_count`; else TelemetryError naming the boards."""
        def check(m: FleetBoard) -> None:
            m.telemetry.assert_sequence(m.topic(name), field, min_count=min_count)
            values = m.telemetry.sequence(m.topic(name), field)["values"]
            if first is not None and values and min(values) > first:
                raise m.telemetry.fail(f"{field!r} on {m.topic(name)!r} starts at {min(values)}: "
                                       f"{first}..{min(values) - 1} missing")
        self._each(check, f"sequence of {name!r}")

    def _each(self, check: Callable[[FleetBoard], Any], what: str) -> dict[int, Any]:
        results, failed = {}, []
        for member in self.boards:
            try:
                results[member.index] = check(member)
            except TelemetryError as e:
                failed.append((member, str(e).splitlines()[0]))
        if failed:
            shown = "; ".join(f"{m.client_id}: {why}" for m, why in failed[:5])
            more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
            raise TelemetryError(f"{what}: {len(failed)} of {len(self)} boards failed: {shown}{more}")
        return results

    def _failure(self, what: str, boards: list[FleetBoard]) -> TelemetryError:
        names = ", ".join(m.client_id for m in boards[:10]) + (f" and {len(boards) - 10} more" if len(boards) > 10 else "")
        tail = boards[0].console.tail(5) if boards else ""
        return TelemetryError(f"fleet {self.label}: {what}: {names}" +
                              (f"\nconsole of {boards[0].client_id}:\n{tail}" if tail.strip() else ""))

    # -- the end ---------------------------------------------------------------------------------
    def save_consoles(self, folder: Path) -> None:
        """Each board's console as <client id>.console.log in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        for member in self.boards:
            (folder / f"{member.client_id}.console.log").write_text(member.console.text)

    def close(self, workers: int | None = None) -> None:
        """Stop every board (its process killed by pid), its simulator and telemetry; safe twice."""
        if self._closed:
            return
        self._closed = True
        members, self.boards = self.boards, []

        def close_one(member: FleetBoard) -> None:
            try:
                member.board.close()
            finally:
                member.sim.close()
                member.telemetry.close()

        try:
            if members:
                with ThreadPoolExecutor(max_workers=workers or min(len(members), 4 * (os.cpu_count() or 2))) as pool:
                    for future in [pool.submit(close_one, m) for m in members]:
                        future.exception()  # every board is closed; nothing to report at teardown
        finally:
            self.boards = members  # still readable (consoles, records) after close
            self._router.close()
            if self._staged is not None:
                tempdirs.remove(self._staged)
                self._staged = None
            if self._launcher is not None:
                self._launcher.close()
                self._launcher = None
            for engine in self._own_engines:
                engine.close()
            self._engines, self._own_engines = [], []

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Fleet {self.label}: {len(self.boards)} x {self.firmware.name}>"


def wire(sim: Simulator, firmware: Firmware | None, wiring: Wiring | None = None, where: str = "wiring") -> None:
    """Wire a simulator as `firmware`'s manifest says, then as `wiring` (apply_wiring) says;
    safe from several threads at once."""
    with _WIRING:
        if firmware is not None:
            firmware.wire(sim)
        if wiring:
            apply_wiring(sim, wiring, where)
