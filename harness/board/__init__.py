"""The board layer: one API (Board) over a MicroPython board the test drives.

    Board          the common API over the raw REPL (board.py), opened by Board.unix(),
                   Board.serial() or open_board(spec)
    UnixBoard      the unix port behind a pty, optionally a simulated ESP32 (unix_board.py)
    SerialBoard    a chip on a serial port or an rfc2217:// URL (serial_board.py)
    LabgridBoard   a chip on a labgrid place, locked while open (labgrid_board.py; labgrid itself is
                   imported only when one is opened: labgrid_place.py, place_owner.py)
    DockerBoard    a simulated board whose process runs in a container (docker_board.py; its image:
                   board_image.py; its network is wired by netfault/container_board.py)
    BoardSpec      a parsed `--board` spec (spec.py)
    FirmwareRun    a script running in the background, its output in the board's Console
    SimProcess     MicroPython under a Simulator as a plain process, without the REPL
    UnixPort, Launch, find_micropython   launching the unix port (unix_port.py)
    ReplTransport, find_esp32_port, ESP32_USB_IDS  the raw REPL over a serial line (transport.py)

Importing this package registers the board kinds (unix, serial, labgrid, docker), which Board.unix(),
Board.serial() and open_board() need.
"""

from .board import DEFAULT_TIMEOUT, Board, DeployReport, open_board
from .console import BOOT_BANNER, Console
from .docker_board import DockerBoard
from .firmware_run import FirmwareRun, RunHost
from .labgrid_board import LabgridBoard
from .serial_board import SerialBoard
from .sim_process import Run, SimProcess
from .spec import BoardSpec
from .transport import ESP32_USB_IDS, ReplTransport, find_esp32_port
from .unix_board import UnixBoard
from .unix_port import Launch, UnixPort, find_micropython, wait_gone

__all__ = [
    "BOOT_BANNER", "Board", "BoardSpec", "Console", "DEFAULT_TIMEOUT", "DeployReport", "DockerBoard", "ESP32_USB_IDS",
    "FirmwareRun", "LabgridBoard", "Launch", "ReplTransport", "Run", "RunHost", "SerialBoard", "SimProcess",
    "UnixBoard", "UnixPort", "find_esp32_port", "find_micropython", "open_board", "wait_gone",
]
