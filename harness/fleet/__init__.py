"""Many boards in one test: roles, synchronisation, fleets.

    Boards, Role          several boards by role, simulated and real side by side (team.py)
    BoardAssignment       which board each role gets from --board ROLE=SPEC (assign.py)
    Sync, SyncTimeout     barriers and shared values between boards and the test (sync.py;
                          the boards' side is firmware_under_test/common/lib/hilsync.py)
    Fleet, FleetBoard     N simulated boards in parallel, checked each and all (fleet.py)
    TelemetryRouter       a Telemetry per board from one broker listener (router.py)
    ensure_fds            room for a fleet's file descriptors (limits.py)
"""

from .assign import BoardAssignment, split_role
from .fleet import Fleet, FleetBoard, wire
from .limits import ensure_fds
from .router import TelemetryRouter
from .sync import Sync, SyncTimeout
from .team import Boards, Role

__all__ = [
    "BoardAssignment", "Boards", "Fleet", "FleetBoard", "Role", "Sync", "SyncTimeout",
    "TelemetryRouter", "ensure_fds", "split_role", "wire",
]
