# Settings the firmware reads at start; a test may overwrite this file on the board.
INTERVAL_MS = 100
