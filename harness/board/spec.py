"""A `--board` spec, parsed once into a value: which kind of board, and where.

    unix                      a simulated ESP32 (profile from --sim-profile, default esp32)
    unix:PROFILE              a simulated chip of that profile (esp32s3, ...)
    serial:PORT               a chip on a serial port: /dev/ttyUSB0, auto, rfc2217://HOST:PORT
    labgrid:PLACE             a chip on a labgrid place, locked for the run (coordinator: LG_COORDINATOR)
    docker                    a simulated ESP32 whose process runs in a container on its own network
    docker:PROFILE            the same, of that profile (engine: DOCKER_HOST, else the local socket)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BoardConnectionError

KINDS = ("unix", "serial", "labgrid", "docker")
SIMULATED_KINDS = ("unix", "docker")  # boards under the simulator: their inputs can be set


@dataclass(frozen=True)
class BoardSpec:
    """What `--board` asked for, parsed once: open_board and the plugin (its option check, its
    kind-based skips, the simulator's profile) read these fields instead of splitting the text."""

    kind: str                   # "unix", "serial", "labgrid" or "docker"
    profile: str | None = None  # unix:PROFILE, docker:PROFILE
    port: str | None = None     # serial:PORT (a device path, "auto", or an rfc2217:// URL)
    text: str = ""              # as the user wrote it, for messages
    place: str | None = None    # labgrid:PLACE (a place name or alias on the coordinator)

    @classmethod
    def parse(cls, text: str) -> "BoardSpec":
        """The spec in `text`; BoardConnectionError naming it when it is not one."""
        kind, _, arg = text.strip().partition(":")
        shown = text or "''"  # the message names the spec, even an empty one
        if kind in SIMULATED_KINDS:
            return cls(kind, profile=arg or None, text=text)
        if kind == "serial":
            if not arg:
                raise BoardConnectionError(shown, "name the port: serial:/dev/ttyUSB0, serial:auto or "
                                           "serial:rfc2217://host:port")
            return cls("serial", port=arg, text=text)
        if kind == "labgrid":
            if not arg:
                raise BoardConnectionError(shown, "name the place: labgrid:PLACE (`labgrid-client places` "
                                           "lists them)")
            return cls("labgrid", place=arg, text=text)
        raise BoardConnectionError(shown, "unknown board kind; use unix, unix:PROFILE, serial:PORT, serial:auto, "
                                   "labgrid:PLACE or docker:PROFILE")

    @property
    def simulated(self) -> bool:
        """A board under the simulator (unix, docker), whose inputs a test sets."""
        return self.kind in SIMULATED_KINDS

    def __str__(self) -> str:
        arg = self.profile or self.port or self.place
        return self.text or (f"{self.kind}:{arg}" if arg else self.kind)
