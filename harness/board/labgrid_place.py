"""A labgrid place held for a run: the coordinator session, the place's lock, and what the place
offers the board (its serial port, its power switch).

    hold = PlaceHold.acquire("esp32-a", "127.0.0.1:20408", wait=0, run=PID)
    hold.serial_url, hold.speed           # rfc2217://HOST:PORT?ign_set_control, from its NetworkSerialPort
    hold.power_cycle(off_s=1.0)           # through its power switch; False where it has none
    hold.release()                        # only if the run still holds it; safe to call twice

This runs in the labgrid agent (labgrid_agent.py), a process of the run's own: labgrid's client
is gRPC, whose threads make every fork of the process that runs them a hazard, and the harness
forks boards, brokers and tools. labgrid is imported here and nowhere else in the harness.
Everything goes through labgrid's client API: its `ClientSession` (the gRPC stream the
coordinator pushes places and resources on), the coordinator's requests (`AcquirePlace`,
`ReleasePlace`), and its `Target`, resources and power drivers for the switch.

The lock: the session acquires under the run's name (place_owner.py). A place another holder
has is waited for up to `wait` seconds, then refused in one line naming the holder; one a
killed run of this machine left is released first, with `ReleasePlace(fromuser=that run)`,
which the coordinator applies only if that run still holds it, so two runs clearing the same
stale lock at once cannot release each other's fresh one. `release()` names this run the same
way, so it never gives back a place someone has since taken over (`labgrid-client release --kick`).

The agent has one session per coordinator, shared by the places it holds (the coordinator tells
clients apart by their connection, which gRPC shares between the channels of one process), ended
when the last is released. Sessions run on one event loop in a thread of its own (labgrid's client
is asyncio), started with the first and kept until the process ends (gRPC still calls into a loop
after its channels close, and logs errors if it is closed): the coordinator's updates keep
arriving while tests run, and its keepalives are answered.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time
import warnings
import weakref
from typing import Any, Coroutine

from labgrid import Target  # first: without labgrid, the ImportError names it
from labgrid.factory import target_factory
import grpc
from labgrid.remote.client import ClientSession
from labgrid.remote.client import Error as LabgridError
from labgrid.remote.generated import labgrid_coordinator_pb2 as requests_pb2
from labgrid.util.proxy import proxymanager

from ..errors import BoardConnectionError, HarnessWarning
from .place_owner import Holder, owner_user

DEFAULT_PORT = 20408  # labgrid's, where a coordinator address has none
POLL_S = 0.2          # between looks at a held place, or at a serial port not up yet
CALL_S = 15.0         # one exchange with the coordinator
PORT_READY_S = 10.0   # an exporter starts ser2net for a RawSerialPort/USBSerialPort on acquire
RESOURCES_S = 5.0     # a place's resources stay marked acquired a moment after it is released
# labgrid's power resources (as the coordinator lists them) and the drivers that switch them.
POWER_DRIVERS = {
    "NetworkPowerPort": "NetworkPowerDriver",      # PDUs, relays, shelly, tasmota-over-http, simplerest, ...
    "PDUDaemonPort": "PDUDaemonDriver",
    "TasmotaPowerPort": "TasmotaPowerDriver",
    "NetworkUSBPowerPort": "USBPowerDriver",       # uhubctl on the exporter (SSH)
    "NetworkSiSPMPowerPort": "SiSPMPowerDriver",
    "NetworkYKUSHPowerPort": "YKUSHPowerDriver",
}

_live: "weakref.WeakSet[PlaceHold]" = weakref.WeakSet()
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _session_loop() -> asyncio.AbstractEventLoop:
    """The event loop the sessions run on, in its thread (started on first use, kept)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="hil-labgrid", daemon=True).start()
        return _loop


class _RunSession(ClientSession):
    """labgrid's client session, acquiring under the run's name (place_owner.py): `run_user`,
    set before it starts."""

    run_user = ""

    def getuser(self) -> str:
        return self.run_user or super().getuser()


class _Link:
    """The session with one coordinator for one run, on the sessions' loop, shared by the run's
    holds on that coordinator and ended when the last is released."""

    _links: dict[str, "_Link"] = {}
    _links_lock = threading.Lock()

    def __init__(self, coordinator: str, run: int) -> None:
        self.coordinator = coordinator
        self.run = run
        self.users = 0
        self.session: Any = None
        self.loop = _session_loop()

    @classmethod
    def join(cls, coordinator: str, run: int, name: str) -> "_Link":
        """The session with `coordinator` for run `run` (started if there is none, or it broke)."""
        with cls._links_lock:
            key = f"{run}@{coordinator}"
            link = cls._links.get(key)
            if link is None or link.session is None or link.session.stopping.is_set():
                link = cls(coordinator, run)
                link.call(link._start(name), CALL_S, name)
                cls._links[key] = link
            link.users += 1
            return link

    async def _start(self, name: str) -> None:
        address = proxymanager.get_grpc_address(self.coordinator, default_port=DEFAULT_PORT)
        self.session = _RunSession(address=address, loop=self.loop)
        self.session.run_user = owner_user(ClientSession.getuser(self.session), pid=self.run)
        try:
            await self.session.start()
        except (LabgridError, grpc.aio.AioRpcError) as e:
            await self.session.close()
            self.session = None
            raise BoardConnectionError(name, f"cannot reach the labgrid coordinator at {self.coordinator} "
                                       f"({_one_line(e)}); "
                                       "is labgrid-coordinator running there? (set LG_COORDINATOR or "
                                       "--labgrid-coordinator)") from None

    def leave(self, name: str) -> None:
        """One hold less: the last one ends the session."""
        with self._links_lock:
            self.users -= 1
            if self.users > 0:
                return
            key = f"{self.run}@{self.coordinator}"
            if self._links.get(key) is self:
                del self._links[key]
        if self.session is not None:
            self.call(self._end(), CALL_S, name)

    async def _end(self) -> None:
        await self.session.stop()
        await self.session.close()

    def call(self, coro: Coroutine, timeout: float, name: str) -> Any:
        """Run `coro` on the session's loop; its result, or its error raised here."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise BoardConnectionError(name, f"the labgrid coordinator at {self.coordinator} did not answer "
                                       f"within {timeout:g} s") from None
        except BaseException:
            future.cancel()  # Ctrl-C while waiting: the caller releases what was taken
            raise


class PlaceHold:
    """A place this run acquired on a labgrid coordinator, until release()."""

    def __init__(self, place: str, coordinator: str, name: str, run: int) -> None:
        self.place = place              # the name asked for; the place's own name once found
        self.coordinator = coordinator
        self.run = run                  # the pid of the run it is held for
        self.name = name                # the board's name, which messages start with
        self.identity = ""              # HOST/USER+hil-...: who the coordinator says holds it
        self.serial_url = ""
        self.speed = 115200
        self.cleared: Holder | None = None  # the lock of a killed run that acquiring cleared
        self.session: Any = None
        self._link: _Link | None = None
        self._held = False
        self._asked = False  # an AcquirePlace went out: release() asks back, even if Ctrl-C cut its answer
        self._closed = False
        self._target: Any = None        # a labgrid Target with the power driver, on first use
        self._power: Any = None
        self._power_looked = False
        _live.add(self)

    # -- acquiring ---------------------------------------------------------------------------
    @classmethod
    def acquire(cls, place: str, coordinator: str, wait: float = 0.0, name: str | None = None,
                run: int | None = None) -> "PlaceHold":
        """Lock `place` on `coordinator` (HOST[:PORT]) for run `run` (a pid; default: this
        process) and find its serial port, waiting up to `wait` seconds for a place someone holds;
        BoardConnectionError naming the place (and its holder, or the coordinator) if it cannot."""
        hold = cls(place, coordinator, name or f"labgrid:{place}", os.getpid() if run is None else run)
        try:
            hold._link = _Link.join(coordinator, hold.run, hold.name)
            hold.session = hold._link.session
            hold.identity = f"{hold.session.gethostname()}/{hold.session.getuser()}"
            hold._call(hold._lock(wait), wait + CALL_S)
            hold._call(hold._find_serial_port(), PORT_READY_S + CALL_S)
        except BaseException:
            hold.release()
            raise
        return hold

    def _find_place(self) -> Any:
        places = self.session.places
        if self.place in places:
            return places[self.place]
        aliased = [p for p in places.values() if self.place in {a.split(":", 1)[-1] for a in p.aliases}]
        if len(aliased) == 1:
            return aliased[0]
        known = ", ".join(sorted(places)) or "none"
        raise self._error(f"no place {self.place!r} on the labgrid coordinator at {self.coordinator} (places: "
                          f"{known}); create one with `labgrid-client -p {self.place} create` and add-match")

    async def _lock(self, wait: float) -> None:
        session = self.session
        deadline = time.monotonic() + wait
        busy_until = time.monotonic() + RESOURCES_S
        while True:
            place = self._find_place()
            self.place = place.name
            if place.acquired:
                holder = Holder.of(place.acquired, run=self.run)
                if holder.stale:  # a killed run of this machine: released only if it still holds it
                    await session.stub.ReleasePlace(requests_pb2.ReleasePlaceRequest(
                        placename=place.name, fromuser=place.acquired))
                    await session.sync_with_coordinator()
                    self.cleared = holder
                    continue
                if time.monotonic() >= deadline:
                    waited = f" (waited {wait:g} s)" if wait else ""
                    raise self._error(f"place {place.name} on {self.coordinator} is held by {holder.describe()}"
                                      f"{waited}; wait for it with --labgrid-wait SECONDS")
                await asyncio.sleep(POLL_S)
                continue
            self._asked = True
            try:
                await session.stub.AcquirePlace(requests_pb2.AcquirePlaceRequest(placename=place.name))
            except grpc.aio.AioRpcError as e:
                await session.sync_with_coordinator()
                if session.places[place.name].acquired:
                    continue  # another client took it between our look and our request: look again
                if "resources" in (e.details() or "") and time.monotonic() < max(deadline, busy_until):
                    # A resource still marked acquired: for a moment after a release (the exporter
                    # confirms it after the place is free), or held by another place.
                    await asyncio.sleep(POLL_S)
                    continue
                hint = " (another place holds one of its resources: `labgrid-client who`)" if "resources" in (e.details() or "") else ""
                raise self._error(f"could not acquire place {place.name} on {self.coordinator}: {e.details()}{hint}") from None
            self._held = True
            await session.sync_with_coordinator()
            return

    async def _find_serial_port(self) -> None:
        """The place's NetworkSerialPort as a pyserial URL, waiting for an exporter that starts
        ser2net on acquire to publish its TCP port."""
        deadline = time.monotonic() + PORT_READY_S
        while True:
            try:
                resources = self.session.get_target_resources(self.session.places[self.place])
            except LabgridError as e:
                raise self._error(f"place {self.place}: {e}") from None
            ports = sorted((name, entry) for (name, cls), entry in resources.items() if cls == "NetworkSerialPort")
            if not ports:
                have = ", ".join(sorted(f"{cls}" for _, cls in resources)) or "no resources"
                raise self._error(f"place {self.place} has no serial port (it matched {have}); add-match the "
                                  "exporter's RawSerialPort, USBSerialPort or NetworkSerialPort to it, and check "
                                  "that its exporter is running")
            ready = [(name, entry) for name, entry in ports if entry.avail and entry.params.get("port")]
            if ready:
                self.serial_url, self.speed = serial_url(self.name, ready[0][1])
                return
            if time.monotonic() >= deadline:
                raise self._error(f"the serial port of place {self.place} ({ports[0][0]}) is not available after "
                                  f"{PORT_READY_S:g} s; is its device plugged in, and ser2net installed on its exporter?")
            await asyncio.sleep(POLL_S)

    # -- power -----------------------------------------------------------------------------------
    def has_power(self) -> bool:
        """Whether the place has a power switch labgrid can drive."""
        return self._power_driver() is not None

    def power_cycle(self, off_s: float = 1.0) -> bool:
        """Switch the chip off for `off_s` seconds and on again; False where the place has no
        power switch. BoardConnectionError naming the place if the switch fails."""
        driver = self._power_driver()
        if driver is None:
            return False
        try:
            driver.off()
            time.sleep(off_s)
            driver.on()
        except Exception as e:  # requests, subprocess, labgrid's ExecutionError: one line whatever it is
            raise self._error(f"the power switch of place {self.place} ({type(driver).__name__}) failed: "
                              f"{type(e).__name__}: {e}") from None
        return True

    def _power_driver(self) -> Any:
        if self._power_looked:
            return self._power
        self._power_looked = True

        async def resources() -> dict:
            return self.session.get_target_resources(self.session.places[self.place])

        for (name, cls), entry in sorted(self._call(resources(), CALL_S).items()):
            if cls not in POWER_DRIVERS:
                continue
            target = Target(f"hil-{self.place}")
            resource = target_factory.make_resource(target, cls, None if name == cls else name, entry.args)
            resource.extra = entry.extra  # how labgrid's own RemotePlace hands over the proxy settings
            resource.avail = entry.avail
            try:
                driver = target_factory.make_driver(target, POWER_DRIVERS[cls], None, {})
                target.activate(driver)
            except Exception as e:
                raise self._error(f"cannot drive the power switch of place {self.place} ({cls} {name}): "
                                  f"{type(e).__name__}: {e}") from None
            self._target, self._power = target, driver
            break
        return self._power

    # -- releasing -------------------------------------------------------------------------------
    def release(self) -> None:
        """Give the place back (if this run still holds it) and end the session; safe to call
        twice. A coordinator that cannot be reached leaves a warning: the next run on this
        machine recognises the lock as a finished run's and clears it."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        if self._target is not None:
            try:
                self._target.deactivate_all_drivers()
            except Exception:
                pass
        try:
            if self._asked:
                self._call(self._give_back(), CALL_S)
        except Exception as e:
            if self._held:
                warnings.warn(HarnessWarning(f"{self.name}: could not release place {self.place} on "
                                             f"{self.coordinator} ({_one_line(e)}); the next run on this "
                                             "machine clears its lock"), stacklevel=2)
        finally:
            if self._link is not None:
                self._link.leave(self.name)

    async def _give_back(self) -> None:
        await self.session.stub.ReleasePlace(requests_pb2.ReleasePlaceRequest(
            placename=self.place, fromuser=self.identity))
        self._held = False
        await self.session.sync_with_coordinator()

    # -- helpers ---------------------------------------------------------------------------------
    def _call(self, coro: Coroutine, timeout: float) -> Any:
        return self._link.call(coro, timeout, self.name)

    def _error(self, message: str) -> BoardConnectionError:
        return BoardConnectionError(self.name, message)

    def __repr__(self) -> str:
        return f"<PlaceHold {self.place} on {self.coordinator}{' held' if self._held else ''}>"


def serial_url(name: str, entry: Any) -> tuple[str, int]:
    """The pyserial URL and speed of a NetworkSerialPort as the coordinator lists it.

    `ign_set_control`: pyserial waits for ser2net to confirm each DTR/RTS change (RFC 2217
    SET_CONTROL), which it does not do the way pyserial expects: without the option, opening the
    port fails after 3 s ("timeout while waiting for option 'control'"); with it, each change
    takes pyserial's 0.1 s pause."""
    params = entry.params
    if entry.extra.get("proxy_required"):
        raise BoardConnectionError(name, f"serial port {params.get('host')}:{params.get('port')} is exported in "
                                   "isolated mode (reachable only through an SSH proxy to the exporter), which "
                                   "the harness does not set up; export it without --isolated")
    host = str(params["host"])
    host = f"[{host}]" if ":" in host else host
    speed = int(params.get("speed") or 115200)
    if params.get("protocol", "rfc2217") == "raw":
        return f"socket://{host}:{params['port']}", speed
    return f"rfc2217://{host}:{params['port']}?ign_set_control", speed


def _one_line(error: BaseException) -> str:
    """An error's first line (a gRPC error's details: its repr spans several)."""
    details = getattr(error, "details", None)
    text = details() if callable(details) else str(error)
    return (text or type(error).__name__).strip().splitlines()[0]


@atexit.register
def _release_left_holds() -> None:
    """Places still held at exit (a board never closed): released, not left to the next run."""
    for hold in list(_live):
        hold.release()
