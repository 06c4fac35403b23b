"""Which board each role of a multi-board test gets: the `--board` values, parsed once.

    --board unix                          every board simulated (the default)
    --board serial:/dev/ttyUSB0           the run's board is real (single-board tests)
    --board relay=serial:/dev/ttyUSB0     the `relay` role on that port, the other roles simulated
    --board relay=serial:/dev/ttyUSB0 --board switch=serial:/dev/ttyUSB1

A value is `ROLE=SPEC` when what comes before its first "=" is a role name (a word: letters,
digits, _ and -); anything else is the run's board spec (`serial:rfc2217://host:2217?x=1` stays
one). A role without a board of its own is simulated where the run's board is (`unix`, or
`docker`: each role in a container of its own), and absent on a bench (the run's board is real, and a simulated stand-in is not what was asked
for: `--board ROLE=unix` says so explicitly).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from ..board.spec import BoardSpec
from ..errors import HarnessError

ROLE_NAME = re.compile(r"^[A-Za-z_][\w-]*$")


def split_role(value: str) -> tuple[str | None, str]:
    """("relay", "serial:/dev/ttyUSB0") for "relay=serial:/dev/ttyUSB0"; (None, value) for a spec."""
    role, sep, spec = value.partition("=")
    if sep and ROLE_NAME.match(role.strip()):
        return role.strip(), spec.strip()
    return None, value.strip()


@dataclass(frozen=True)
class BoardAssignment:
    """The run's board spec and the roles given boards of their own."""

    default: BoardSpec
    roles: dict[str, BoardSpec] = field(default_factory=dict)

    @classmethod
    def parse(cls, values: Iterable[str], fallback: str = "unix") -> "BoardAssignment":
        """From the --board values in order; HarnessError naming a bad or repeated one."""
        default: BoardSpec | None = None
        roles: dict[str, BoardSpec] = {}
        for value in values:
            role, text = split_role(value)
            if not text:
                raise HarnessError(f"{value!r}: name a board spec after the role, e.g. {role}=unix "
                                   f"or {role}=serial:/dev/ttyUSB0")
            spec = BoardSpec.parse(text)
            if role is None:
                if default is not None and default != spec:
                    raise HarnessError(f"{default} and {spec}: give one board for the run; give "
                                       "the others to roles (ROLE=SPEC)")
                default = spec
            else:
                roles[role] = spec  # a later value wins: the command line's over the ini file's
        default = default or BoardSpec.parse(fallback)
        ports: dict[str, str] = {}
        for role, spec in roles.items():
            if spec.kind == "serial" and spec.port != "auto":
                if spec.port in ports:
                    raise HarnessError(f"roles {ports[spec.port]!r} and {role!r} both name {spec}: "
                                       "one board per port")
                ports[spec.port] = role
        return cls(default, roles)

    def spec_for(self, role: str) -> BoardSpec | None:
        """The board `role` runs on; None when it has none on this bench."""
        if role in self.roles:
            return self.roles[role]
        return self.default if self.default.simulated else None

    def why_absent(self, role: str) -> str:
        """The skip reason for a role without a board."""
        return (f"role {role!r} has no board on this bench (--board {self.default}): give it one with "
                f"--board {role}=serial:PORT, or simulate it with --board {role}=unix")
