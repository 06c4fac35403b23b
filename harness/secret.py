"""Secret: a password that never shows in output.

Broker and WiFi passwords travel through configs, fixtures and error messages, and pytest prints
the locals of failing frames; CI logs are often public. A Secret is a `str` (so JSON files, MQTT
CONNECT packets and comparisons get the real value), but its repr, str and format are masked:
whatever prints it, a dict or tuple holding it, an f-string, a traceback's locals, shows `***`.
Code that must hand the value to something that formats it (a script's source text) calls
`reveal()`.
"""

from __future__ import annotations

from typing import Any

MASK = "***"


class Secret(str):
    """A string whose printed forms are masked; `reveal()` gives the value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"'{MASK}'"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def reveal(self) -> str:
        """The real value, as a plain str."""
        return str.__str__(self)

    def __reduce__(self) -> tuple:
        # Pickled (e.g. by a subprocess helper) as a Secret, not as its plain value.
        return (Secret, (self.reveal(),))


def secret(value: Any) -> Secret | None:
    """`value` as a Secret (None and empty stay as they are: nothing to hide)."""
    if value is None or isinstance(value, Secret):
        return value
    return Secret(value)


def reveal(value: Any) -> Any:
    """The plain value of a Secret; anything else unchanged."""
    return value.reveal() if isinstance(value, Secret) else value
