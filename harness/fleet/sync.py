"""Synchronisation between the boards of one test and the test itself, over the MQTT broker:
barriers and shared values, as MicroPython's multi-instance tests have (NEXT, SET, BROADCAST)
but for N boards. The device side is `firmware_under_test/common/lib/hilsync.py` (deployed
with the firmware, reading its settings from /hil_config.json); this is the test's side.

    boards.sync.barrier("ready")               # every party arrives, or SyncTimeout names who did not
    boards.sync.set("threshold", 25)           # a shared value every party reads
    boards.sync.get("calibrated", timeout=10)  # a value a board set

Topics, under a base unique to the test (`hilsync/<token>`), every message retained at QoS 1
so that a party which subscribes late still sees it:

    <base>/b/<barrier>/<round>/<party>   "1": the party arrived at that round of the barrier
    <base>/v/<key>                       the value, as JSON

Rounds are counted by each party (the n-th call of barrier("x") is round n), so a barrier can
be passed again and again. Parties are the roles' names and "test"; a barrier waits for all
of them unless `parties=` names fewer. `close()` clears the retained topics it saw.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any, Callable, Iterable

from ..errors import HarnessError, SyncTimeout

TEST_PARTY = "test"


def new_base() -> str:
    """A topic base no other test shares."""
    return f"hilsync/{secrets.token_hex(4)}"


def device_settings(base: str, me: str, parties: Iterable[str], client_id: str) -> dict:
    """What hilsync.py on a board reads from /hil_config.json's extra["hilsync"]."""
    return {"base": base, "me": me, "parties": list(parties), "client_id": client_id}


class Sync:
    """The test's end: a harness MQTT client subscribed to the base, waiting on what arrives.

    `describe` maps a party to how a message names it ("relay (board relay[unix], client
    relay-r2)"); parties it does not know are named as they are."""

    def __init__(self, broker: Any, base: str, parties: Iterable[str], me: str = TEST_PARTY,
                 describe: Callable[[str], str] | None = None, timeout: float = 10.0) -> None:
        self.base, self.me, self.timeout = base, me, timeout
        self.parties = list(parties)
        self.describe = describe or (lambda party: party)
        self._arrived: dict[tuple[str, int], set[str]] = {}
        self._values: dict[str, Any] = {}
        self._rounds: dict[str, int] = {}
        self._topics: set[str] = set()
        self._changed = threading.Condition()
        self._client = broker.client(client_id=f"hil-sync-{secrets.token_hex(3)}", on_message=self._on_message)
        self._client.subscribe(f"{base}/#", qos=1)

    # -- what arrives ------------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool,
                    client_id: str | None) -> None:
        if not topic.startswith(self.base + "/"):
            return
        parts = topic[len(self.base) + 1:].split("/")
        with self._changed:
            if payload:
                self._topics.add(topic)
            else:
                self._topics.discard(topic)
            if parts[0] == "b" and len(parts) == 4 and parts[2].isdigit():
                arrived = self._arrived.setdefault((parts[1], int(parts[2])), set())
                (arrived.add if payload else arrived.discard)(parts[3])
            elif parts[0] == "v" and len(parts) == 2:
                key = parts[1]
                if payload:
                    try:
                        self._values[key] = json.loads(payload)
                    except ValueError:
                        self._values[key] = payload  # not JSON: the bytes, as they came
                else:
                    self._values.pop(key, None)
            self._changed.notify_all()

    def _wait(self, done: Callable[[], bool], timeout: float | None) -> bool:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._changed:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    # -- barriers ------------------------------------------------------------------------------
    def barrier(self, name: str, timeout: float | None = None, parties: Iterable[str] | None = None) -> int:
        """Arrive at the next round of barrier `name` and wait for every party; the round.

        SyncTimeout names the parties that did not arrive (the boards and their client ids)."""
        _check_name(name, "barrier")
        want = list(parties) if parties is not None else self.parties
        round_ = self._rounds.get(name, 0) + 1
        self._rounds[name] = round_
        self._client.publish(f"{self.base}/b/{name}/{round_}/{self.me}", b"1", qos=1, retain=True)
        arrived = lambda: self._arrived.get((name, round_), set())  # noqa: E731
        if not self._wait(lambda: all(p in arrived() for p in want), timeout):
            missing = [p for p in want if p not in arrived()]
            came = sorted(arrived())
            raise SyncTimeout(f"barrier {name!r} (round {round_}): {', '.join(map(self.describe, missing))} "
                              f"did not arrive within {self.timeout if timeout is None else timeout:g} s"
                              f"; arrived: {', '.join(came) or 'none'}")
        return round_

    def arrived(self, name: str, round_: int | None = None) -> set[str]:
        """Who has arrived at a round of barrier `name` (default: this party's latest round)."""
        with self._changed:
            return set(self._arrived.get((name, round_ or self._rounds.get(name, 1)), set()))

    # -- shared values -------------------------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        """Share a value (JSON) with every party; retained until the test ends."""
        _check_name(key, "value")
        self._client.publish(f"{self.base}/v/{key}", json.dumps(value).encode(), qos=1, retain=True)

    def get(self, key: str, timeout: float | None = None) -> Any:
        """The value of `key`, waiting for a party to set it; SyncTimeout if none does."""
        if not self._wait(lambda: key in self._values, timeout):
            raise SyncTimeout(f"value {key!r} was not set within {self.timeout if timeout is None else timeout:g} s; "
                              f"set: {', '.join(sorted(self._values)) or 'none'}")
        with self._changed:
            return self._values[key]

    def wait(self, key: str, value: Any, timeout: float | None = None) -> None:
        """Wait until `key` holds `value` (set by any party)."""
        if not self._wait(lambda: self._values.get(key, _UNSET) == value, timeout):
            with self._changed:
                now = self._values.get(key, _UNSET)
            shown = "not set" if now is _UNSET else f"{now!r}"
            raise SyncTimeout(f"value {key!r} did not become {value!r} within "
                              f"{self.timeout if timeout is None else timeout:g} s (it is {shown})")

    @property
    def values(self) -> dict[str, Any]:
        with self._changed:
            return dict(self._values)

    # -- the end ---------------------------------------------------------------------------
    def close(self) -> None:
        """Clear every retained topic seen under the base and disconnect."""
        try:
            with self._changed:
                topics = sorted(self._topics)
            for topic in topics:
                self._client.publish(topic, b"", qos=1, retain=True)
        except (OSError, HarnessError):
            pass  # the broker is gone (stopped at the end of a session): nothing to clear
        finally:
            self._client.close()


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def _check_name(name: str, what: str) -> None:
    if not name or any(c in name for c in "+#/"):
        raise HarnessError(f"hilsync {what} name {name!r}: use letters, digits, - and _ "
                           "(no MQTT wildcards, no /)")
