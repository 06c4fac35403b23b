"""The labgrid agent: a process of the run's own that holds its labgrid places.

    python -m micropython_hil.board.labgrid_agent RUN_PID      (started by labgrid_lease.py)

labgrid's client speaks gRPC, whose threads turn every fork of their process into a hazard: its
fork handlers log, and now and then crash the child before it execs (measured with the loopback
lab). The harness forks all the time (boards, brokers, tools), so the places are held from here:
labgrid_place.py runs in this process only, and the test run talks to it in JSON lines.

Requests, one JSON object a line on stdin, each with an `id`; answers on stdout with the same id,
`{"ok": ...}` or `{"error": "one line"}` (and `"warning"` when the agent stepped in):

    {"id": 1, "op": "acquire", "place": P, "coordinator": C, "wait": S, "name": BOARD}
        -> {"place", "identity", "coordinator", "serial_url", "speed", "cleared": {"acquired", "pid"} | null}
    {"id": 2, "op": "has_power", "lease": 1}            -> true | false
    {"id": 3, "op": "power_cycle", "lease": 1, "off_s": 1.0} -> true | false
    {"id": 4, "op": "release", "lease": 1}              -> null (an acquire still under way is
                                                           released as soon as it completes)

Requests are served concurrently (a release while another acquire waits for its place). The
first line out is `{"ready": PID}`, or `{"error": ...}` when labgrid cannot be imported. The agent
releases every place it holds and exits when stdin ends or on SIGTERM, its parent-death signal:
a SIGKILLed run's places are released by its agent; a killed agent's are cleared by the next run
(place_owner.py).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import warnings
from typing import Any, Callable

_PR_SET_PDEATHSIG = 1
_write_lock = threading.Lock()


def _send(message: dict) -> None:
    line = json.dumps(message) + "\n"
    with _write_lock:
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except (OSError, ValueError):
            pass  # the run is gone: stdin ends next, and the agent releases what it holds


def _stop(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the parent-death signal may come twice: once is enough
    raise SystemExit(0)


def main(argv: list[str]) -> int:
    run = int(argv[0])
    # The tether arms SIGKILL for when the run dies; SIGTERM instead lets this agent release.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run's Ctrl-C is the run's to handle
    try:
        from .labgrid_place import PlaceHold
    except ImportError as e:
        _send({"error": f"cannot import labgrid ({e})"})
        return 1
    holds: dict[int, Any] = {}
    dropped: set[int] = set()  # leases released before their acquire completed
    lock = threading.Lock()

    def release(lease: int) -> str | None:
        with lock:
            hold = holds.pop(lease, None)
            if hold is None:
                dropped.add(lease)
                return None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hold.release()
        return str(caught[-1].message) if caught else None

    def acquire(request: dict) -> dict:
        hold = PlaceHold.acquire(request["place"], request["coordinator"], wait=float(request.get("wait") or 0),
                                 name=request.get("name"), run=run)
        with lock:
            if request["id"] in dropped:
                abandoned = True
            else:
                abandoned = False
                holds[request["id"]] = hold
        if abandoned:
            hold.release()
            raise RuntimeError("released while it was being acquired")
        cleared = hold.cleared
        return {"place": hold.place, "identity": hold.identity, "coordinator": hold.coordinator,
                "serial_url": hold.serial_url, "speed": hold.speed,
                "cleared": None if cleared is None else {"acquired": cleared.acquired, "pid": cleared.pid}}

    def held(request: dict) -> Any:
        try:
            return holds[request["lease"]]
        except KeyError:
            raise RuntimeError(f"lease {request['lease']} is not held") from None

    ops: dict[str, Callable[[dict], Any]] = {
        "acquire": acquire,
        "has_power": lambda request: held(request).has_power(),
        "power_cycle": lambda request: held(request).power_cycle(float(request.get("off_s", 1.0))),
    }

    def serve(request: dict) -> None:
        answer: dict = {"id": request.get("id")}
        try:
            if request.get("op") == "release":
                answer["ok"] = None
                warning = release(request["lease"])
                if warning:
                    answer["warning"] = warning
            else:
                answer["ok"] = ops[request["op"]](request)
        except Exception as e:  # noqa: BLE001 - every failure goes back as one line
            answer.pop("ok", None)
            answer["error"] = _one_line(e)
        _send(answer)

    _send({"ready": os.getpid()})
    try:
        for line in sys.stdin:
            if line.strip():
                threading.Thread(target=serve, args=(json.loads(line),), daemon=True).start()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # nothing cuts the releases short
        with lock:
            leases = list(holds)
        for lease in leases:
            try:
                release(lease)
            except Exception:  # noqa: BLE001 - the others are released all the same
                pass
    return 0


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
