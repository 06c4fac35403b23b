"""Fleets of simulated weather stations in one process: how fast they start, what each costs, and
whether every reading arrives.

For each fleet size (default 50 and 200): the stations start in parallel (Fleet.start), each
with its own sensor values; once every one is online they publish one reading a second for
`--seconds` (default 60), and the run reports:

    boards            the fleet's size
    start_all_s       from the first launch to every board running its main.py
    online_all_s      from the first launch to every board's "online" on the broker
    board_rss_mb      mean resident memory of a board process (board_rss_max_mb: the largest)
    host_cpu_pct      the harness process's CPU over the window, in % of one core (broker,
                      telemetry, channels); boards_cpu_pct: all board processes together
    msgs_per_s        readings routed by the broker over the window
    lost_msgs         readings missing from the boards' sequence numbers (gaps, and before the
                      first seen); duplicates: readings seen twice
    start_vs_one      start_all_s against starting the boards one after another at the
                      baseline's pace: boards x one_board_start_s, measured first in this run

Issue 15's targets, for 200 stations: start in under 10 s, at most 15 MB per board, every board
publishing, no reading lost over 60 s. The last line is one JSON object: {"fleets": [...],
"baseline": {...}, "targets_met": {...}}.

    python benchmarks/bench_fleet.py                       # 50 and 200 boards, 60 s each
    python benchmarks/bench_fleet.py --boards 20 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

from micropython_hil.deploy.firmware import Firmware
from micropython_hil.fleet.fleet import Fleet
from micropython_hil.mqtt.broker import AmqttBroker

STATION = Path(__file__).resolve().parents[1] / "firmware_under_test" / "weather_station"
TICKS = os.sysconf("SC_CLK_TCK")


def values(i: int) -> dict:
    """Board i's own weather: a spread of temperatures, pressures and humidities."""
    return {"sensors": {"bme280@0x76": {"temperature": 5.0 + (i % 30), "pressure": 980.0 + (i % 50),
                                        "humidity": 30.0 + (i % 60)}}}


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, ValueError, IndexError, TypeError):
        return 0.0


def rss_mb(pid: int | None) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, TypeError):
        pass
    return 0.0


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_fleet(broker: AmqttBroker, firmware: Firmware, n: int, seconds: float, interval_s: int) -> dict:
    begin = time.monotonic()
    fleet = Fleet.start(broker, firmware, n, values=values, extra={"interval_s": interval_s})
    try:
        fleet.expect_online(timeout=120)
        online_all_s = time.monotonic() - begin
        pids = [member.board.port.pid for member in fleet]
        routed_before, host_before = fleet.router.routed, own_cpu()
        boards_before = sum(cpu_seconds(pid) for pid in pids)
        window_start = time.monotonic()
        time.sleep(seconds)  # the fleet runs on its own; this is the window measured
        window = time.monotonic() - window_start
        host_cpu = own_cpu() - host_before
        boards_cpu = sum(cpu_seconds(pid) for pid in pids) - boards_before
        routed = fleet.router.routed - routed_before
        rss = [rss_mb(pid) for pid in pids]
        lost = fleet.lost("telemetry")
        duplicates = sum(len(report["duplicates"]) for report in fleet.sequences("telemetry").values())
        silent = [m.client_id for m, count in zip(fleet, fleet.counts("telemetry").values()) if count == 0]
        return {
            "boards": n,
            "start_all_s": round(fleet.start_s, 2),
            "online_all_s": round(online_all_s, 2),
            "board_rss_mb": round(statistics.mean(rss), 2),
            "board_rss_max_mb": round(max(rss), 2),
            "host_cpu_pct": round(100 * host_cpu / window, 1),
            "boards_cpu_pct": round(100 * boards_cpu / window, 1),
            "msgs_per_s": round(routed / window, 1),
            "lost_msgs": sum(lost.values()),
            "duplicates": duplicates,
            "silent_boards": len(silent),
            "window_s": round(window, 1),
        }
    finally:
        fleet.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", type=int, nargs="+", default=[50, 200], help="fleet sizes to run")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window per fleet")
    parser.add_argument("--interval", type=int, default=1, help="seconds between a station's readings")
    args = parser.parse_args()
    firmware = Firmware(STATION)
    broker = AmqttBroker().start()
    try:
        one = Fleet.start(broker, firmware, 1, values=values, extra={"interval_s": args.interval})
        one_board_start_s = one.start_s
        one.close()
        fleets = []
        for n in args.boards:
            result = run_fleet(broker, firmware, n, args.seconds, args.interval)
            result["start_vs_one"] = round(result["start_all_s"] / (n * one_board_start_s), 3)
            fleets.append(result)
            print("  ".join(f"{key} {value}" for key, value in result.items()), flush=True)
    finally:
        broker.stop()
    biggest = max(fleets, key=lambda r: r["boards"])
    targets = {
        "every_board_publishes": all(r["silent_boards"] == 0 for r in fleets),
        "no_reading_lost": all(r["lost_msgs"] == 0 for r in fleets),
        "at_most_15_mb_per_board": all(r["board_rss_max_mb"] <= 15 for r in fleets),
        f"{biggest['boards']}_start_under_10_s": biggest["start_all_s"] < 10,
    }
    print(json.dumps({"fleets": fleets, "baseline": {"one_board_start_s": round(one_board_start_s, 3)},
                      "targets_met": targets}))


if __name__ == "__main__":
    main()
