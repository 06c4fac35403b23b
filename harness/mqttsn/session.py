"""One MQTT-SN client as the gateway sees it: its state, its timers, its topic ids, its
subscriptions, and the messages on their way down to it.

States (MQTT-SN 1.2 section 6.14): "connecting" (a CONNECT with the will flag, the will being
asked for), "active" (supervised by the keep-alive), "asleep" (after a DISCONNECT with a
duration: messages for it are buffered, supervised by the sleep duration), "awake" (it sent a
PINGREQ with its client id: the buffered messages go down, then PINGRESP puts it back to sleep),
"disconnected" (a DISCONNECT without duration) and "lost" (a timer ran out: its will fires).

Messages go down one at a time: a topic the client has no id for is REGISTERed first, a QoS 1
or 2 message waits for its acknowledgement, retried with DUP until the gateway's retry count
runs out; then it stays at the head of the queue until the client is heard from again.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from .bridge import Bridge
from .packets import Packet
from .topics import TopicIds

CONNECTING, ACTIVE, ASLEEP, AWAKE, DISCONNECTED, LOST = \
    "connecting", "active", "asleep", "awake", "disconnected", "lost"
STATES = (CONNECTING, ACTIVE, ASLEEP, AWAKE, DISCONNECTED, LOST)
RECENT_IDS = 64  # QoS 1 message ids remembered per client to drop DUP retransmissions


@dataclass
class Downlink:
    """A message from the broker on its way to the client."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    rejected: bool = False  # the client once answered "invalid topic id" for it


@dataclass
class Inflight:
    """The message being delivered: the packet awaiting an answer and its retries."""

    message: Downlink
    phase: str                  # "register" (awaiting REGACK), "publish" (PUBACK/PUBREC), "pubrel" (PUBCOMP)
    packet: Packet
    msg_id: int
    tries: int = 1
    due: float | None = None    # monotonic time of the next retry; None: parked until the client speaks


@dataclass
class Subscription:
    """What the client subscribed to: a filter (or a short or predefined topic) and its QoS."""

    topic_filter: str
    qos: int
    topic_type: int


@dataclass
class Session:
    """One client's state at the gateway."""

    client_id: str
    address: tuple
    topics: TopicIds
    state: str = CONNECTING
    clean: bool = True
    keepalive: int = 0             # seconds, from CONNECT
    sleep: int = 0                 # seconds, from DISCONNECT with a duration
    last_heard: float = 0.0        # monotonic
    will_topic: tuple[str, int, bool] | None = None   # (topic, qos, retain) while connecting
    will: tuple[str, bytes, int, bool] | None = None
    bridge: Bridge | None = None
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    outbox: collections.deque = field(default_factory=collections.deque)
    inflight: Inflight | None = None
    qos2_in: set[int] = field(default_factory=set)           # QoS 2 ids forwarded, awaiting PUBREL
    recent_qos1: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT_IDS))
    injected: list[bytes] = field(default_factory=list)      # raw datagrams for the next wake
    dropped: int = 0               # buffered messages dropped because the buffer was full
    just_connected: bool = False   # CONNACK sent, nothing else heard since: a CONNECT now is a retry
    next_msg_id: int = 1

    def msg_id(self) -> int:
        """The next message id for a message going down (1..65535)."""
        mid = self.next_msg_id
        self.next_msg_id = mid % 0xFFFF + 1
        return mid

    @property
    def deliverable(self) -> bool:
        """Whether messages may go down now (active, or awake and draining the buffer)."""
        return self.state in (ACTIVE, AWAKE)

    def supervision(self, tolerance: float, scale: float) -> float | None:
        """Monotonic time at which the client counts as lost unless heard from; None: never."""
        if self.state in (ACTIVE, CONNECTING):
            period = self.keepalive
        elif self.state in (ASLEEP, AWAKE):
            period = self.sleep
        else:
            return None
        if not period:
            return None
        return self.last_heard + period * tolerance * scale

    def wants(self, topic: str, matches) -> Subscription | None:
        """The subscription a message on `topic` is delivered under (None: not subscribed any more)."""
        exact = self.subscriptions.get(topic)
        if exact is not None:
            return exact
        for sub in self.subscriptions.values():
            if matches(sub.topic_filter, topic):
                return sub
        return None

    def reset(self) -> None:
        """A new session: forget ids, subscriptions, queued and in-flight messages."""
        self.topics.clear()
        self.subscriptions.clear()
        self.outbox.clear()
        self.inflight = None
        self.qos2_in.clear()
        self.recent_qos1.clear()
        self.will = self.will_topic = None
        self.sleep = 0
