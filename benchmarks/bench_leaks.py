"""Leaks after killed runs: a child pytest with a board, a broker and running firmware, killed at a
random point by SIGKILL, SIGTERM or SIGINT; then a count of what survived it.

Each run gets its own temp folder (TMPDIR) and an environment tag its children inherit, so only
its own processes and folders are counted, never another run's. A SIGKILLed pytest cannot clean
up: its children die with it (parent-death signal) and its folders are removed by the next
session's start, which this script performs as the next run would. Last line: JSON with `runs`,
`leaked_processes`, `leaked_dirs`.

    python benchmarks/bench_leaks.py --runs 100
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

CHILD_TEST = '''
import time


def test_lives(board, broker, telemetry, start_firmware, tmp_path):
    firmware = tmp_path / "fw"
    firmware.mkdir()
    (firmware / "main.py").write_text("import time\\nwhile True:\\n    print('beat')\\n    time.sleep_ms(50)\\n")
    start_firmware(firmware=firmware)
    time.sleep(30)
'''
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}


def default_sigint() -> None:
    """In the child before it starts: SIGINT as a terminal's Ctrl-C finds it. A process started in
    the background of a non-interactive shell (nohup, `cmd &`) has SIGINT ignored, and its
    children inherit that: the SIGINT sent here would then be ignored, not a Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries this run's tag (the harness's children inherit it)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if f"HIL_LEAK_TAG={tag}".encode() in environ.split(b"\0"):
            found.append(int(entry))
    return found


def wait_gone(tag: str, timeout: float) -> list[int]:
    """The tagged processes still there after `timeout` s (polled: nothing announces an exit of
    a process that is not our child)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in tagged_pids(tag) if not _zombie(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def one_run(workdir: Path, broker: str, signame: str, delay: float) -> dict:
    """One child pytest killed by `signame` after `delay` s; what it left."""
    tag = uuid.uuid4().hex[:12]
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True)
    env = dict(os.environ, TMPDIR=str(tmp), HIL_LEAK_TAG=tag)
    child = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--broker", broker,
                              "-o", f"cache_dir={workdir / 'cache'}", str(workdir / "test_lives.py")],
                             cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True, preexec_fn=default_sigint)
    time.sleep(delay)
    child.send_signal(SIGNALS[signame])
    try:
        child.wait(timeout=20)
    except subprocess.TimeoutExpired:
        child.kill()  # a run that would not end counts as a leak of itself
        child.wait()
    survivors = wait_gone(tag, 3.0)
    if signame == "SIGKILL":
        # What the next session does first: remove the folders of runs that are gone.
        subprocess.run([sys.executable, "-c", "from micropython_hil import tempdirs; tempdirs.remove_stale()"],
                       env=env, check=True)
    leftover = sorted(p.name for p in tmp.glob("hil-*"))
    for pid in survivors:  # leave the machine clean for the next run
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {"broker": broker, "signal": signame, "delay_s": round(delay, 2), "processes": len(survivors),
            "dirs": leftover}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--brokers", default="amqtt,mosquitto" if shutil.which("mosquitto") else "amqtt")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    combos = itertools.cycle([(b, s) for b in args.brokers.split(",") for s in SIGNALS])
    results = []
    base = Path(tempfile.mkdtemp(prefix="bench-leaks-"))
    try:
        for i in range(args.runs):
            broker, signame = next(combos)
            workdir = base / f"run{i}"
            workdir.mkdir()
            (workdir / "test_lives.py").write_text(CHILD_TEST)
            result = one_run(workdir, broker, signame, rng.uniform(0.2, 3.0))
            results.append(result)
            if result["processes"] or result["dirs"]:
                print(f"run {i}: {result}", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    summary = {
        "runs": len(results),
        "leaked_processes": sum(r["processes"] for r in results),
        "leaked_dirs": sum(len(r["dirs"]) for r in results),
        "by_signal": {s: sum(1 for r in results if r["signal"] == s) for s in SIGNALS},
        "brokers": args.brokers.split(","),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
