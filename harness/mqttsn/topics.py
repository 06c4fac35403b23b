"""Topic ids: what a topic id means for one MQTT-SN client at the gateway.

Three kinds (MQTT-SN 1.2 section 3.2): normal ids, which the gateway assigns per client (in a
REGACK, a SUBACK, or its own REGISTER) and which last as long as the client's session; predefined
ids, which the gateway and its clients agree on beforehand (the gateway's table, shared by all
clients); and short topic names, two characters carried in the topic id field itself.
"""

from __future__ import annotations

from .packets import NORMAL, PREDEFINED, SHORT, short_name

MAX_TOPIC_ID = 0xFFFE  # 0x0000 and 0xFFFF are reserved


def has_wildcards(name: str) -> bool:
    """Whether a topic name is a filter (it holds + or #), which cannot have a topic id."""
    return "+" in name or "#" in name


class TopicIds:
    """One client's normal topic ids (assigned on demand, 1 upward), over the gateway's
    predefined table (a dict shared with the gateway, so ids predefined later count too)."""

    def __init__(self, predefined: dict[int, str]) -> None:
        self.predefined = predefined
        self._by_name: dict[str, int] = {}
        self._by_id: dict[int, str] = {}
        self._next = 1

    def register(self, name: str) -> int:
        """The normal id of `name`, assigned now if it has none."""
        found = self._by_name.get(name)
        if found is not None:
            return found
        for _ in range(MAX_TOPIC_ID):
            candidate, self._next = self._next, self._next % MAX_TOPIC_ID + 1
            if candidate not in self._by_id:
                self._by_name[name], self._by_id[candidate] = candidate, name
                return candidate
        raise ValueError(f"no free topic id left for {name!r}: {MAX_TOPIC_ID} are registered")

    def forget(self, name: str) -> None:
        """Drop the normal id of `name` (the client rejected it)."""
        topic_id = self._by_name.pop(name, None)
        if topic_id is not None:
            self._by_id.pop(topic_id, None)

    def clear(self) -> None:
        """Forget every normal id (a new session)."""
        self._by_name.clear()
        self._by_id.clear()
        self._next = 1

    def normal_id(self, name: str) -> int | None:
        """The normal id registered for `name`, if any."""
        return self._by_name.get(name)

    def predefined_id(self, name: str) -> int | None:
        """The predefined id of `name`, if the gateway's table has one."""
        for topic_id, known in self.predefined.items():
            if known == name:
                return topic_id
        return None

    def name(self, topic_type: int, topic_id: int) -> str | None:
        """The topic name a (type, id) pair stands for; None when unknown."""
        if topic_type == NORMAL:
            return self._by_id.get(topic_id)
        if topic_type == PREDEFINED:
            return self.predefined.get(topic_id)
        if topic_type == SHORT:
            return short_name(topic_id)
        return None

    @property
    def registered(self) -> dict[str, int]:
        """Every normal id: {topic name: id}."""
        return dict(self._by_name)
