"""A chip on a labgrid place against the same chip on a local pty, measured in the same run.

The loopback lab of the tests (tests/labgrid_lab: a real labgrid coordinator and exporter,
Debian's ser2net, a simulated ESP32 served on a pty standing in for the chip) publishes the one
chip two ways: through ser2net with the settings of tests/labgrid_lab/ser2net.yaml (place
hil-chip, "tuned") and as a RawSerialPort, for which the exporter starts ser2net with its default
settings (hil-chip-default, "default"). The same chip is also opened on its pty directly ("local").

Prints one JSON object as its last line:
- exec_rtt_p50_ms / exec_rtt_p99_ms (= labgrid_exec_rtt_p50_ms): an exec round trip through the
  tuned place; default_exec_rtt_p50_ms through the default one; local_exec_rtt_p50_ms (=
  direct_exec_rtt_p50_ms) on the pty; their ratios; under_1ms (issue 17: under 1 ms p50);
- acquire_s / release_s: locking and unlocking the tuned place on the coordinator (median), and
  default_acquire_s for the default one (its exporter starts ser2net before the port is up);
- open_s / close_s: a whole board open (lock, RFC 2217 port, raw REPL, soft reset) and close;
- deploy_100kb_s for tuned, default and local (Nagle's algorithm, left on by ser2net's defaults, shows here).

    python benchmarks/bench_labgrid.py [--n 300]
Needs labgrid (pip install -e '.[labgrid]') and ser2net (apt-get install ser2net).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "labgrid_lab"))

from loopback_lab import LoopbackLab, missing, ser2net  # noqa: E402

from bench_transport import make_firmware  # noqa: E402  (this folder: the same 100 KB firmware)

from micropython_hil import tempdirs  # noqa: E402
from micropython_hil.board import Board, open_board  # noqa: E402
from micropython_hil.board.labgrid_lease import Lease  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def exec_rtts(board: Board, n: int) -> list[float]:
    for _ in range(20):  # warm up
        board.exec("pass")
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        board.exec("pass")
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def deploy_s(board: Board, firmware: Path) -> float:
    if board.exists("bench_fw"):
        board.rm("bench_fw", recursive=True)
    start = time.perf_counter()
    report = board.deploy(firmware, dest="bench_fw")
    took = time.perf_counter() - start
    assert len(report.uploaded) == 10, report
    board.rm("bench_fw", recursive=True)
    return took


def lock_times(place: str, n: int) -> tuple[list[float], list[float]]:
    acquired, released = [], []
    for _ in range(n):
        start = time.perf_counter()
        lease = Lease.acquire(place)
        acquired.append(time.perf_counter() - start)
        start = time.perf_counter()
        lease.release()
        released.append(time.perf_counter() - start)
    return acquired, released


def bench(n: int, lab: LoopbackLab, work: Path) -> dict:
    firmware = work / "fw"
    firmware.mkdir()
    make_firmware(firmware)
    os.environ["LG_COORDINATOR"] = lab.coordinator
    figures: dict = {}
    with Board.serial(lab.device, name="local") as local:
        figures["local"] = exec_rtts(local, n), deploy_s(local, firmware)
    for label, place in (("tuned", "hil-chip"), ("default", "hil-chip-default")):
        with open_board(f"labgrid:{place}") as board:
            figures[label] = exec_rtts(board, n), deploy_s(board, firmware)
    Lease.acquire("hil-chip").release()  # the agent started, out of the figures
    acquire, release = lock_times("hil-chip", 20)
    default_acquire, _ = lock_times("hil-chip-default", 5)
    opens, closes = [], []
    for _ in range(5):
        start = time.perf_counter()
        board = open_board("labgrid:hil-chip")
        opens.append(time.perf_counter() - start)
        start = time.perf_counter()
        board.close()
        closes.append(time.perf_counter() - start)

    tuned, default, local = (statistics.median(figures[k][0]) for k in ("tuned", "default", "local"))
    return {
        "exec_rtt_p50_ms": round(tuned, 3),
        "exec_rtt_p99_ms": round(percentile(figures["tuned"][0], 0.99), 3),
        "labgrid_exec_rtt_p50_ms": round(tuned, 3),
        "default_exec_rtt_p50_ms": round(default, 3),
        "default_exec_rtt_p99_ms": round(percentile(figures["default"][0], 0.99), 3),
        "local_exec_rtt_p50_ms": round(local, 3),
        "direct_exec_rtt_p50_ms": round(local, 3),
        "tuned_over_local": round(tuned / local, 2),
        "default_over_local": round(default / local, 2),
        "default_over_tuned": round(default / tuned, 1),
        "under_1ms": tuned < 1.0,
        "acquire_s": round(statistics.median(acquire), 4),
        "release_s": round(statistics.median(release), 4),
        "default_acquire_s": round(statistics.median(default_acquire), 3),
        "open_s": round(statistics.median(opens), 3),
        "close_s": round(statistics.median(closes), 3),
        "deploy_100kb_s": {k: round(figures[k][1], 3) for k in ("tuned", "default", "local")},
        "n": n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="exec round trips per path")
    args = parser.parse_args()
    why = missing()
    if why:
        print(json.dumps({"error": why}))
        sys.exit(1)
    from importlib.metadata import version
    work = tempdirs.make_temp_dir("bench-labgrid")
    try:
        with LoopbackLab() as lab:
            result = bench(args.n, lab, work)
    finally:
        tempdirs.remove(work)
    result["labgrid"] = version("labgrid")
    result["ser2net"] = subprocess.run([ser2net(), "-v"], capture_output=True, text=True).stdout.split()[-1]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
