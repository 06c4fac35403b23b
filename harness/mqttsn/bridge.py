"""One MQTT-SN client's MQTT connection to the broker, as the gateway keeps it.

The gateway is transparent (MQTT-SN 1.2 section 4): each connected MQTT-SN client has its own
MQTT connection under its own client id, so the broker sees the node by name, its will is an
MQTT will the broker fires itself, and a sleeping client's subscriptions keep collecting while
it sleeps. A `Bridge` is driven from the gateway's thread only; the MQTT client's reader thread
calls `on_message` for what the broker routes to it.
"""

from __future__ import annotations

from typing import Any

from ..errors import MqttError
from ..mqtt.client import MqttClient
from ..mqtt.listener import Listener


class Bridge:
    """An MQTT connection for one client id, reconnected (and resubscribed) when it dropped."""

    def __init__(self, broker: Any, client_id: str, on_message: Listener, *, clean: bool = True,
                 will: tuple[str, bytes, int, bool] | None = None, keepalive: int = 60, timeout: float = 3.0) -> None:
        self.host, self.port = broker.host, broker.port
        self.credentials = getattr(broker, "credentials", None)
        self.client_id, self.on_message, self.clean, self.will = client_id, on_message, clean, will
        self.keepalive, self.timeout = keepalive, timeout
        self.subscriptions: dict[str, int] = {}  # filter -> QoS asked for, replayed on reconnect
        self._client: MqttClient | None = None

    @property
    def up(self) -> bool:
        return self._client is not None and self._client.connected

    def open(self) -> "Bridge":
        """Connect (MqttError when the broker cannot be reached or refuses)."""
        self._drop()
        user, password = self.credentials or (None, None)
        client = MqttClient(self.host, self.port, self.client_id, username=user, password=password,
                            keepalive=self.keepalive, clean=self.clean, on_message=self.on_message,
                            will=self.will, timeout=self.timeout)
        try:
            client.connect()
        except OSError as exc:
            raise MqttError(f"MQTT-SN gateway: broker {self.host}:{self.port} unreachable for {self.client_id!r}: "
                            f"{exc}") from None
        self._client = client
        for topic_filter, qos in self.subscriptions.items():
            client.subscribe(topic_filter, qos)
        return self

    def ensure(self) -> None:
        """Reconnect if the connection dropped (a broker restart, say)."""
        if not self.up:
            self.open()

    def _call(self, action: str, fn) -> Any:
        """Run an MQTT call; one reconnect and retry when the connection had dropped."""
        try:
            self.ensure()
            return fn(self._client)
        except (OSError, MqttError):
            self.open()
            try:
                return fn(self._client)
            except OSError as exc:
                raise MqttError(f"MQTT-SN gateway: {action} for {self.client_id!r} failed: {exc}") from None

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """Publish (QoS 1 and 2: once the broker acknowledged); MqttError if it could not."""
        self._call(f"PUBLISH to {topic!r}", lambda c: c.publish(topic, payload, qos=max(qos, 0), retain=retain))

    def subscribe(self, topic_filter: str, qos: int) -> int:
        """Subscribe and remember it for reconnects; the granted QoS."""
        granted = self._call(f"SUBSCRIBE {topic_filter!r}", lambda c: c.subscribe(topic_filter, qos))
        self.subscriptions[topic_filter] = qos
        return granted

    def forget(self, topic_filter: str) -> None:
        """Stop replaying a subscription on reconnects (the gateway filters what still arrives)."""
        self.subscriptions.pop(topic_filter, None)

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close(disconnect=False)
            self._client = None

    def close(self, fire_will: bool = False) -> None:
        """Leave with DISCONNECT (no will), or drop the connection so the broker fires the will."""
        if self._client is not None:
            self._client.close(disconnect=not fire_will)
            self._client = None
