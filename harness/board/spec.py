"""A `--board` spec, parsed once into a value: which kind of board, and where.

    unix                      a simulated ESP32 (profile from --sim-profile, default esp32)
    unix:PROFILE              a simulated chip of that profile (esp32s3, ...)
    serial:PORT               a chip on a serial port: /dev/ttyUSB0, auto, rfc2217://HOST:PORT
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BoardConnectionError

KINDS = ("unix", "serial")


@dataclass(frozen=True)
class BoardSpec:
    """What `--board` asked for, parsed once: open_board and the plugin (its option check, its
    kind-based skips, the simulator's profile) read these fields instead of splitting the text."""

    kind: str                   # "unix" or "serial"
    profile: str | None = None  # unix:PROFILE
    port: str | None = None     # serial:PORT (a device path, "auto", or an rfc2217:// URL)
    text: str = ""              # as the user wrote it, for messages

    @classmethod
    def parse(cls, text: str) -> "BoardSpec":
        """The spec in `text`; BoardConnectionError naming it when it is not one."""
        kind, _, arg = text.strip().partition(":")
        shown = text or "''"  # the message names the spec, even an empty one
        if kind == "unix":
            return cls("unix", profile=arg or None, text=text)
        if kind == "serial":
            if not arg:
                raise BoardConnectionError(shown, "name the port: serial:/dev/ttyUSB0, serial:auto or "
                                           "serial:rfc2217://host:port")
            return cls("serial", port=arg, text=text)
        raise BoardConnectionError(shown, "unknown board kind; use unix, unix:PROFILE, serial:PORT or serial:auto")

    def __str__(self) -> str:
        return self.text or (f"{self.kind}:{self.profile or self.port}" if self.profile or self.port else self.kind)
