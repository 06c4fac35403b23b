"""Nothing left behind: child pytest runs killed at random points leave no process and no folder."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_leaks.py"


def test_killed_runs_leave_no_process_and_no_folder():
    brokers = "amqtt,mosquitto" if shutil.which("mosquitto") else "amqtt"
    runs = 6 if "," in brokers else 3  # every signal with every broker
    out = subprocess.run([sys.executable, str(BENCH), "--runs", str(runs), "--brokers", brokers],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["runs"] == runs
    assert (summary["leaked_processes"], summary["leaked_dirs"]) == (0, 0), out.stderr[-3000:]
