"""A labgrid place leased for this run: the run's side of the labgrid agent.

    lease = Lease.acquire("esp32-a", coordinator=None, wait=None, name="labgrid:esp32-a")
    lease.serial_url, lease.speed, lease.identity, lease.cleared
    lease.has_power(); lease.power_cycle(1.0)
    lease.release()                                   # safe to call twice

The places are held by the agent (labgrid_agent.py), one process per run, started through a
Tether on the first lease and kept until the run ends: it holds every place the run leases, on
any coordinator. This module imports nothing of labgrid, so the harness runs without it; a lease
where labgrid is not installed is one line saying what to install. If the run dies, the agent's
parent-death signal (SIGTERM) makes it release what it holds; if both die, the next run on this
machine clears the lock (place_owner.py).
"""

from __future__ import annotations

import atexit
import collections
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import threading
import warnings
from typing import Any

from ..errors import BoardConnectionError, HarnessWarning
from ..tether import Tether

AGENT = "micropython_hil.board.labgrid_agent"
START_S = 30.0     # the agent imports labgrid (a quarter of a second here) and says it is ready
ANSWER_S = 60.0    # beyond the agent's own limits on the coordinator (15 s a request)
INSTALL = "install it with pip install 'pytest-micropython-hil[labgrid]'"
COORDINATOR_ENV = "LG_COORDINATOR"    # labgrid's own variable (labgrid-client, labgrid-exporter)
WAIT_ENV = "HIL_LABGRID_WAIT"         # seconds to wait for a held place (--labgrid-wait)
DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid's default


class _Agent:
    """The agent process and its pipes: requests out, answers matched back by id."""

    _current: "_Agent | None" = None
    _current_lock = threading.Lock()

    @classmethod
    def get(cls, name: str) -> "_Agent":
        """This run's agent, started if it is not running."""
        with cls._current_lock:
            if cls._current is not None and cls._current.ended is not None:
                cls._current.close()  # it ended (killed, crashed): its tether's thread too
                cls._current = None
            if cls._current is None:
                cls._current = cls(name)
            return cls._current

    def __init__(self, name: str) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, list] = {}  # id -> [event, answer]
        self._lock = threading.Lock()
        self._errors: collections.deque[str] = collections.deque(maxlen=20)
        self.ended: str | None = None
        self._ready = threading.Event()
        self._ready_answer: dict = {}
        # gRPC's fork handlers are not needed in the agent, which forks nothing of its own but the
        # tools of some power switches (which exec at once).
        env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false"}
        self._tether = Tether("hil-labgrid-agent")
        try:
            self._proc = self._tether.popen([sys.executable, "-m", AGENT, str(os.getpid())], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                                            bufsize=1)
        except BaseException:
            self._tether.close()
            raise
        threading.Thread(target=self._read_answers, name="hil-labgrid-agent-out", daemon=True).start()
        threading.Thread(target=self._read_errors, name="hil-labgrid-agent-err", daemon=True).start()
        if not self._ready.wait(START_S) or "ready" not in self._ready_answer:
            why = self._ready_answer.get("error") or self.ended or f"no answer within {START_S:g} s"
            self.close()
            if why.startswith("cannot import labgrid"):
                raise BoardConnectionError(name, f"{why}; {INSTALL}")
            raise BoardConnectionError(name, f"the labgrid agent did not start: {why}")

    def _read_answers(self) -> None:
        for line in self._proc.stdout:
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if "id" not in answer:
                self._ready_answer = answer
                self._ready.set()
                continue
            with self._lock:
                slot = self._waiting.get(answer["id"])
            if slot is not None:
                slot[1] = answer
                slot[0].set()
        code = self._proc.wait()
        tail = " | ".join(list(self._errors)[-3:])
        self.ended = f"the labgrid agent ended (exit {code}{': ' + tail if tail else ''})"
        self._ready.set()
        with self._lock:
            slots = list(self._waiting.values())
        for slot in slots:
            slot[0].set()  # unanswered: answer() says the agent ended

    def _read_errors(self) -> None:
        for line in self._proc.stderr:
            if line.strip():
                self._errors.append(line.strip())

    def send(self, request: dict, reply: bool = True) -> int:
        """Send a request; its id, which answer() waits on (unless `reply` is False: no one will)."""
        with self._lock:
            request = {**request, "id": next(self._ids)}
            if reply:
                self._waiting[request["id"]] = [threading.Event(), None]
        try:
            if self.ended is not None:
                raise OSError(self.ended)
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except (OSError, ValueError):  # the agent is gone: answer() says so at once
            with self._lock:
                slot = self._waiting.get(request["id"])
            if slot is not None:
                slot[0].set()
        return request["id"]

    def answer(self, request_id: int, timeout: float, name: str) -> Any:
        with self._lock:
            slot = self._waiting.get(request_id)
        if slot is None:
            raise BoardConnectionError(name, self.ended or "the labgrid agent lost a request")
        try:
            if not slot[0].wait(timeout):
                raise BoardConnectionError(name, f"the labgrid agent did not answer within {timeout:g} s")
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)
        answer = slot[1]
        if answer is None:
            raise BoardConnectionError(name, self.ended or "the labgrid agent ended")
        if answer.get("warning"):
            warnings.warn(HarnessWarning(answer["warning"]), stacklevel=3)
        if "error" in answer:
            message = answer["error"]
            raise BoardConnectionError(name, message[len(name) + 2:] if message.startswith(f"{name}: ") else message)
        return answer["ok"]

    def call(self, request: dict, name: str, timeout: float = ANSWER_S) -> Any:
        return self.answer(self.send(request), timeout, name)

    def close(self) -> None:
        """End the agent: stdin closed (it releases what it still holds and exits), then the tether."""
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._tether.close()

    @classmethod
    def close_current(cls) -> None:
        with cls._current_lock:
            agent, cls._current = cls._current, None
        if agent is not None and agent.ended is None:
            agent.close()


atexit.register(_Agent.close_current)


class Lease:
    """A place the agent holds for this run, until release()."""

    def __init__(self, agent: _Agent, lease_id: int, name: str, details: dict) -> None:
        self._agent = agent
        self.id = lease_id
        self.name = name
        self.place: str = details["place"]
        self.identity: str = details["identity"]          # HOST/USER+hil-...: the holder, as labgrid shows it
        self.coordinator: str = details["coordinator"]
        self.serial_url: str = details["serial_url"]
        self.speed: int = details["speed"]
        self.cleared: dict | None = details["cleared"]    # {"acquired", "pid"} of a finished run's lock
        self._power: bool | None = None
        self._released = False

    @classmethod
    def acquire(cls, place: str, coordinator: str | None = None, wait: float | None = None,
                name: str | None = None) -> "Lease":
        """Lock `place` for this run; BoardConnectionError in one line naming the place, its holder
        or the coordinator at fault. `coordinator`: HOST[:PORT] (default LG_COORDINATOR, else
        127.0.0.1:20408); `wait`: seconds to wait for a held place (default HIL_LABGRID_WAIT, else 0)."""
        name = name or f"labgrid:{place}"
        if importlib.util.find_spec("labgrid") is None:
            raise BoardConnectionError(name, f"cannot import labgrid (it is not installed); {INSTALL}")
        # Read here, not in the agent: its environment is this process's when it started.
        coordinator = coordinator or os.environ.get(COORDINATOR_ENV) or DEFAULT_COORDINATOR
        if wait is None:
            try:
                wait = float(os.environ.get(WAIT_ENV) or 0)
            except ValueError:
                raise BoardConnectionError(name, f"{WAIT_ENV}={os.environ[WAIT_ENV]!r} is not a number of seconds") from None
        agent = _Agent.get(name)
        request = agent.send({"op": "acquire", "place": place, "coordinator": coordinator, "wait": wait,
                              "name": name})
        try:
            details = agent.answer(request, ANSWER_S + wait, name)
        except BaseException:
            agent.send({"op": "release", "lease": request}, reply=False)  # Ctrl-C, or no answer: not left held
            raise
        return cls(agent, request, name, details)

    def has_power(self) -> bool:
        if self._power is None:
            self._power = bool(self._agent.call({"op": "has_power", "lease": self.id}, self.name))
        return self._power

    def power_cycle(self, off_s: float = 1.0) -> bool:
        return bool(self._agent.call({"op": "power_cycle", "lease": self.id, "off_s": off_s}, self.name))

    def release(self) -> None:
        """Give the place back; safe to call twice."""
        if self._released:
            return
        self._released = True
        if self._agent.ended is None:
            self._agent.call({"op": "release", "lease": self.id}, self.name)

    def __repr__(self) -> str:
        return f"<Lease {self.place} on {self.coordinator}{'' if self._released else ' held'}>"
