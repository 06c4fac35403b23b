"""LabgridBoard: a chip on a labgrid place (`--board labgrid:PLACE`), as a Board.

For as long as the board is open its place is acquired on the labgrid coordinator (LG_COORDINATOR
or --labgrid-coordinator), so no other run, CI job or labgrid user can take the chip; its serial
port is opened through the exporter (ser2net, RFC 2217); a hard reset power-cycles the chip
through the place's power switch where it has one (else RTS pulses EN, as on a serial board);
close() releases the place, whether the test passed, failed or was interrupted. If the run is
SIGKILLed its labgrid agent releases the place; if the agent is killed too, the next run on the
same machine clears the lock (place_owner.py).

labgrid is an optional extra (`pip install 'pytest-micropython-hil[labgrid]'`), used only by the
labgrid agent, a process of the run's own that holds its places (labgrid_agent.py, started on the
first labgrid board; labgrid_lease.py is this side of it): the harness imports labgrid in no other
process, and no labgrid session runs in the test run's.
"""

from __future__ import annotations

import time
from typing import Any

from serial import rfc2217

from ..errors import BoardConnectionError
from .board import DEFAULT_TIMEOUT
from .labgrid_lease import Lease
from .serial_board import SerialBoard
from .transport import ReplTransport

POWER_OFF_S = 1.0  # how long a power cycle keeps the chip off: its supply capacitors drain


class LabgridBoard(SerialBoard, kind="labgrid"):
    """A chip on a labgrid place: the place held from open() to close()."""

    hold: Lease | None = None  # the place, leased for as long as the board is open

    def __init__(self, transport: ReplTransport, name: str, timeout: float, hold: Lease) -> None:
        self.hold = hold
        super().__init__(transport, name, timeout)

    @classmethod
    def open(cls, place: str, name: str | None = None, timeout: float = DEFAULT_TIMEOUT,  # type: ignore[override]
             coordinator: str | None = None, wait: float | None = None, reset: bool = False) -> "LabgridBoard":
        """Acquire `place`, open its serial port and take the raw REPL; BoardConnectionError in
        one line naming the place (and who holds it, or the coordinator at fault) if it cannot.
        `coordinator`: HOST[:PORT] (default LG_COORDINATOR, else 127.0.0.1:20408); `wait`:
        seconds to wait for a held place (default HIL_LABGRID_WAIT, else 0). The board comes soft
        reset (a fresh interpreter, its files kept), or with `reset` hard reset (power-cycled
        where the place has a switch)."""
        name = name or f"labgrid:{place}"
        hold = Lease.acquire(place, coordinator=coordinator, wait=wait, name=name)
        try:
            transport = open_port(hold.serial_url, name, hold.speed)
        except BaseException:
            hold.release()
            raise
        board = cls(transport, name, timeout, hold)  # on failure it closes, which releases the place
        if hold.cleared is not None:
            board.console.note(f"place {hold.place}: cleared the lock of a run that is over ({hold.cleared['acquired']})")
        # A place is shared: whoever had it last left their modules, variables and tasks in the
        # chip's RAM. A soft reset (its files kept) hands the test a fresh interpreter.
        try:
            board.reset(hard=reset)
        except BaseException:
            board.close()  # the place is given back
            raise
        return board

    def reboot(self, hard: bool) -> bool:
        if hard and self.hold.has_power():
            # The port is closed across the cycle: a USB-UART powered by the same switch vanishes
            # with the chip, and ser2net takes it up again once a client connects.
            self.console.note(f"power-cycling place {self.hold.place}")
            self.transport.close()
            try:
                self.hold.power_cycle(POWER_OFF_S)
            finally:
                self.transport = open_port(self.hold.serial_url, self.name, self.hold.speed,
                                           retry_for=self.timeout)
            return False
        return super().reboot(hard)  # an EN pulse through RTS over RFC 2217, or Ctrl-D

    def release(self) -> None:
        if self.hold is not None:
            self.hold.release()

    def __repr__(self) -> str:
        return f"<Board {self.name} {self.hold!r}>"


class Rfc2217Transport(ReplTransport):
    """ReplTransport on a network serial port. pyserial's RFC 2217 port refuses a write timeout
    (NotImplementedError as it opens) and ReplTransport gives every port one, so an RFC 2217 port
    is handed over without it: its writes go into a TCP socket, which takes them at once."""

    @property  # type: ignore[override]
    def serial(self) -> Any:
        return self.__dict__["serial"]

    @serial.setter
    def serial(self, port: Any) -> None:
        if isinstance(port, rfc2217.Serial):
            port.write_timeout = None
        self.__dict__["serial"] = port


def open_port(url: str, name: str, speed: int = 115200, retry_for: float = 0.0) -> ReplTransport:
    """The transport on a place's serial port, retried for `retry_for` seconds (a port coming back
    after a power cycle)."""
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return Rfc2217Transport(url, name=name, baudrate=speed)
        except BoardConnectionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
