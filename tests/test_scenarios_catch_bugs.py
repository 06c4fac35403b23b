"""Each scenario fails when the firmware is broken in the way it guards against.

A copy of the reference firmware gets one deliberate bug; the scenario that guards against it
runs on the copy (`--firmware`) in a child pytest and must fail, for the right reason.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# (firmware, file, original text, broken text, scenario, what the failure must mention)
BUGS = {
    "queue-too-small": (
        "weather_station", "app.py", '"queue_max": 32,', '"queue_max": 1,',
        "scenarios/test_weather_station.py::test_wifi_outage_loses_and_duplicates_no_reading",
        "is not a clean sequence"),
    "renamed-field": (
        "weather_station", "app.py", '"humidity_pct": round(h, 1),', '"humidity": round(h, 1),',
        "scenarios/test_weather_station.py::test_boot_to_online_with_telemetry_matching_the_sensor",
        "fails its schema"),
    "ignores-interval-command": (
        "weather_station", "app.py", "            self.interval_s = interval\n", "            pass\n",
        "scenarios/test_weather_station.py::test_retained_command_changes_the_interval",
        "assert"),
    "forgets-sequence-in-deep-sleep": (
        "weather_station", "app.py", "            machine.RTC().memory(str(station.seq).encode())\n", "",
        "scenarios/test_weather_station.py::test_deep_sleep_cycles_keep_the_sequence_and_wake_by_timer",
        "assert"),
    "crashes-on-bad-json": (
        "home_automation", "app.py", "        except (UnicodeError, ValueError):\n            raise CommandError(\"not valid JSON\")",
        "        except KeyError:\n            raise CommandError(\"not valid JSON\")",
        "scenarios/test_home_automation.py::test_malformed_commands_get_error_replies_and_the_node_survives",
        "MicroPython raised ValueError"),  # the firmware's own error, as soon as it crashed
    "relays-forgotten-on-reboot": (
        "home_automation", "app.py", '            bits = self.nvs.get_i32("state")', "            bits = 0",
        "scenarios/test_home_automation.py::test_relay_state_survives_a_reboot",
        "where {'relays': [True, False]}"),
    "no-hysteresis": (
        "industrial_monitor", "app.py", '        self.low = x["high_mv"] - x["hysteresis_mv"]',
        '        self.low = x["high_mv"]',
        "scenarios/test_industrial_monitor.py::test_alarms_follow_the_signal_with_hysteresis",
        "expected no message"),
}


def broken_copy(tmp_path: Path, firmware: str, file: str, original: str, broken: str) -> Path:
    """The reference firmware folder (and the shared code it includes) with one bug planted."""
    root = tmp_path / "firmware_under_test"
    shutil.copytree(REPO / "firmware_under_test", root, ignore=shutil.ignore_patterns("__pycache__"))
    path = root / firmware / file
    source = path.read_text()
    assert source.count(original) == 1, f"{file} changed: cannot plant the bug (update this test)"
    path.write_text(source.replace(original, broken))
    return root / firmware


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_the_scenario_catches_the_planted_bug(bug, tmp_path):
    firmware, file, original, broken, scenario, reason = BUGS[bug]
    copy = broken_copy(tmp_path, firmware, file, original, broken)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", scenario, "--firmware", str(copy), "-p", "no:cacheprovider",
         "-q", "-x", "--hil-artifacts", str(tmp_path / "artifacts")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, f"{bug}: the scenario did not fail\n{result.stdout[-3000:]}"
    assert "1 failed" in result.stdout and reason in result.stdout, result.stdout[-3000:]
