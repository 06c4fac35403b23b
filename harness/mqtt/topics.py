"""MQTT topic filters: which topics a subscription's filter covers."""

from __future__ import annotations


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching ('+' one level, '#' the rest; '$' topics only when named)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    want, have = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or (level != "+" and level != have[i]):
            return False
    return len(want) == len(have)
