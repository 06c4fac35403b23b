"""The callback that receives each routed message: brokers call it for what they route, the
harness's MQTT client for what it receives."""

from __future__ import annotations

from typing import Protocol


class Listener(Protocol):
    """Called from the broker's (or client's) thread for every routed message; must be quick and
    not raise. `client_id` is the publisher's when the broker knows it, else None."""

    def __call__(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool,
                 client_id: str | None) -> None: ...
