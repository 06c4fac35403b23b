"""Boot scenario: the firmware deploys, starts, and keeps running on any board."""

import re

import pytest

HEARTBEAT = "firmware_under_test/heartbeat"


@pytest.mark.firmware(HEARTBEAT)
def test_firmware_boots_and_keeps_a_steady_heartbeat(board, firmware_dir):
    board.deploy(firmware_dir)
    board.run("main.py")
    board.console.expect(r"heartbeat firmware on \w+", timeout=10)
    uptimes = [int(board.console.expect(r"beat \d+ uptime_ms (\d+)", timeout=5).group(1)) for _ in range(5)]
    intervals = [b - a for a, b in zip(uptimes, uptimes[1:])]
    assert all(80 <= i <= 400 for i in intervals), f"heartbeat intervals off: {intervals} ms"


@pytest.mark.firmware(HEARTBEAT)
def test_settings_written_by_the_test_change_the_firmware(board, firmware_dir):
    board.deploy(firmware_dir)
    board.put_bytes(b"INTERVAL_MS = 30\n", "config.py")
    board.run("main.py")
    assert board.console.expect(r"interval (\d+) ms").group(1) == "30"


@pytest.mark.firmware(HEARTBEAT)
def test_redeploy_skips_unchanged_files(board, firmware_dir):
    first = board.deploy(firmware_dir)
    again = board.deploy(firmware_dir)
    assert sorted(first.uploaded) == ["config.py", "main.py"]
    assert again.uploaded == [] and sorted(again.skipped) == ["config.py", "main.py"]
