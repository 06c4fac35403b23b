"""What a fuzzed firmware must do with each payload: the oracle, and the failures it raises.

A payload is classified on the host from its bytes alone (so the verdict is stable while
hypothesis shrinks it):
  valid    UTF-8 JSON (as CPython's strict parser reads it) that the command schema accepts,
           within the size limit: the reply must be ok, echo the id, and the command take effect
  invalid  UTF-8 JSON the schema rejects, or anything over the size limit: the reply must be
           the documented error (ok false, an error string)
  garbage  not UTF-8, not JSON to CPython, or text with unpaired surrogates ("\ud800"): any
           well-formed reply (MicroPython's json parser is more lenient than CPython's;
           differential mode reports those differences)
Every reply, whatever the verdict, must be UTF-8 JSON valid against the reply schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol
from ..errors import FuzzBadReply, FuzzFailure, FuzzWrongReply

import jsonschema

VALID, INVALID, GARBAGE = "valid", "invalid", "garbage"

# JSON integers are Python ints: 1.0 is a float to MicroPython's json and to firmware checks,
# though JSON Schema would call it an integer.
_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, x: isinstance(x, int) and not isinstance(x, bool))
StrictValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPES)


class Model(Protocol):
    """Firmware-specific effects of valid commands (e.g. relays switching); optional."""

    def apply(self, cmd: dict, reply: dict) -> str | None:
        """Update the expected state for an accepted command; a problem string if the reply disagrees."""

    def check_outputs(self, sim: Any) -> str | None:
        """Compare the board's outputs (via the simulator) with the expected state."""

    def sync(self, reply: dict) -> None:
        """Take the expected state from a status reply (after a (re)start)."""


@dataclass
class Contract:
    """A firmware's command protocol as the fuzzer needs it."""

    command_schema: dict
    reply_schema: dict
    cmd_topic: str = "cmd"
    reply_topic: str = "reply"
    max_bytes: int | None = None
    ping: Callable[[str], bytes] = lambda cid: json.dumps({"id": cid, "op": "ping"}).encode()
    status: Callable[[str], bytes] = lambda cid: json.dumps({"id": cid, "op": "get"}).encode()
    heap_field: str = "heap_free"
    model: Model | None = None
    _cmd: Any = field(default=None, repr=False)
    _reply: Any = field(default=None, repr=False)
    _id: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._cmd = StrictValidator(self.command_schema)
        self._reply = StrictValidator(self.reply_schema)
        id_schema = self.command_schema.get("properties", {}).get("id")
        self._id = StrictValidator(id_schema) if id_schema is not None else None

    def classify(self, payload: bytes) -> tuple[str, Any]:
        """(verdict, parsed command or None) for a payload, judged on the host."""
        try:
            cmd = json.loads(payload.decode("utf-8"))
        except (UnicodeError, ValueError, RecursionError):
            return GARBAGE, None
        if _lone_surrogates(cmd):
            return GARBAGE, cmd  # "\ud800" escapes: JSON, but not text (RFC 8259 8.2)
        if self.max_bytes is not None and len(payload) > self.max_bytes:
            return INVALID, cmd
        return (VALID if self._cmd.is_valid(cmd) else INVALID), cmd

    def check_reply(self, payload: bytes, raw_reply: bytes) -> tuple[type[FuzzFailure], str] | None:
        """The first problem with the reply to `payload`, or None; updates the model."""
        try:
            reply = json.loads(raw_reply.decode("utf-8"))
        except (UnicodeError, ValueError) as e:
            return FuzzBadReply, f"reply {raw_reply[:200]!r} is not UTF-8 JSON ({e})"
        errors = sorted(self._reply.iter_errors(reply), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(root)"
            return FuzzBadReply, f"reply {reply!r} fails the reply schema at {where}: {errors[0].message}"
        verdict, cmd = self.classify(payload)
        if verdict == VALID:
            if reply.get("ok") is not True:
                return FuzzWrongReply, f"valid command refused: reply {reply!r}"
            if reply.get("id") != cmd.get("id"):
                return FuzzWrongReply, f"reply id {reply.get('id')!r} is not the command's {cmd.get('id')!r}"
            if self.model is not None:
                problem = self.model.apply(cmd, reply)
                if problem:
                    return FuzzWrongReply, problem
        elif verdict == INVALID and reply.get("ok") is not False:
            why = "over the size limit" if self.max_bytes and len(payload) > self.max_bytes else "invalid"
            return FuzzWrongReply, f"{why} command accepted: reply {reply!r} (expected ok false and an error)"
        elif verdict == INVALID and self._readable_id(payload, cmd) and reply.get("id") != cmd["id"]:
            # A refused command is answered under its own id, so its sender learns which one failed.
            return FuzzWrongReply, (f"refusal of a command with id {cmd['id']!r} came with id "
                                    f"{reply.get('id')!r}: reply {reply!r}")
        elif verdict == GARBAGE and reply.get("ok") and self.model is not None:
            self.model.sync(reply)  # MicroPython's lenient json took it: follow what it did
        return None

    def _readable_id(self, payload: bytes, cmd: Any) -> bool:
        """True when the firmware can read the command's id: a JSON object within the size limit
        whose id is valid against the command schema's id (a string or an integer, not a bool)."""
        if not isinstance(cmd, dict) or "id" not in cmd:
            return False
        if self.max_bytes is not None and len(payload) > self.max_bytes:
            return False
        return self._id is not None and self._id.is_valid(cmd["id"])

    def heap(self, raw_reply: bytes) -> int | None:
        """Free heap reported in a ping reply, if the firmware reports it."""
        try:
            value = json.loads(raw_reply).get(self.heap_field)
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, int) else None


def _lone_surrogates(v: Any) -> bool:
    """True if any string (key or value) in a parsed JSON value holds an unpaired surrogate."""
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return False


class RelayModel:
    """home_automation's relays: set/toggle change them, replies list them, pins follow them."""

    def __init__(self, pins: list[int] = (26, 27)):
        self.pins = list(pins)
        self.states = [False] * len(self.pins)

    def sync(self, reply: dict) -> None:
        self.states = [bool(x) for x in reply.get("relays", self.states)]

    def apply(self, cmd: dict, reply: dict) -> str | None:
        op = cmd.get("op")
        if op == "set":
            self.states[cmd["relay"]] = cmd["state"]
        elif op == "toggle":
            self.states[cmd["relay"]] = not self.states[cmd["relay"]]
        if op in ("set", "toggle", "get") and reply.get("relays") != self.states:
            return f"relays in the reply {reply.get('relays')} are not the expected {self.states} after {cmd!r}"
        return None

    def check_outputs(self, sim: Any) -> str | None:
        levels = [sim.pin(p).level for p in self.pins]
        want = [int(s) for s in self.states]
        if levels != want:
            return f"relay pins {self.pins} are at {levels}, expected {want}"
        return None
