"""What a benchmark run leaves behind: the JSON file of the run, named baselines, the terminal
table, and a histogram PNG per benchmark (written with zlib and struct: no plotting library).
Runs measured in parts (pytest-xdist workers) are merged into one document (`merge_runs`), and
its records read back for the table (`results_of`).

JSON of a run (`<bench dir>/runs/<UTC time>-<pid>.json`; a baseline `<bench dir>/baselines/NAME.json`
is the same document), schema "micropython-hil-bench/1":

    {"schema": "micropython-hil-bench/1", "created": ISO-8601 UTC, "host": hostname,
     "calibrations": {board_id: {"board", "pystones", "reference", "reference_pystones", "factor"}},
     "benchmarks": [{
        "name": test id + target (the key baselines match on), "kind": "hot_loop" | "latency",
        "target": dotted name (or the topic of a latency), "board": board name, "board_id":
        "KIND:PLATFORM:PROFILE" (unix:linux:esp32, serial:esp32:hardware),
        "unit": "us", "stats": {n, min, median, mean, p95, p99, max, stdev, jitter}  (probe
        overhead subtracted), "raw": same keys as timed, "overhead_us", "tick_us": clock resolution,
        "gc": collect | running | off, "alloc": {"median_bytes", "max_bytes", "gc_collections"},
        "blocks": [median of each tenth of the run, time order, divided by the median of the
                   reference kernel timed beside it (hot loops); in us (latency)] (what comparisons use),
        "estimate": null | {"for": chip, "factor", "stats": {...}}  (unix boards: scaled, an estimate),
        "budget": {} | {"budget_us", "stat", "max_alloc_bytes", "passed"},
        "comparison": null | {"baseline", "baseline_median", "current_median", "delta",
                              "ci": [low, high], "confidence", "verdict"},
        "histogram": {"edges": [...], "counts": [...], "beyond": n}, "png": path | null}]}
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import struct
import zlib
from pathlib import Path
from typing import Iterable

from .result import BenchResult, Calibration
from ..errors import BenchError
from .stats import Comparison, Stats, compare, histogram, summarize

SCHEMA = "micropython-hil-bench/1"


def result_to_dict(r: BenchResult) -> dict:
    edges, counts, beyond = histogram(r.durations_us) if r.durations_us else ([], [], 0)
    return {
        "name": r.name, "kind": r.kind, "target": r.target, "board": r.board, "board_id": r.board_id,
        "unit": "us", "stats": r.stats.to_dict(), "raw": r.raw.to_dict(),
        "overhead_us": round(r.overhead_us, 4), "tick_us": r.tick_us, "gc": r.gc,
        "alloc": {"median_bytes": r.alloc_median, "max_bytes": r.alloc_max, "gc_collections": r.gc_collections},
        "blocks": [round(b, 4) for b in r.blocks],
        "estimate": None if r.estimate is None or r.scale is None else
        {"for": r.scale.reference, "factor": round(r.scale.factor, 4), "stats": r.estimate.to_dict(1)},
        "budget": r.budget,
        "comparison": r.comparison,
        "histogram": {"edges": [round(e, 3) for e in edges], "counts": counts, "beyond": beyond},
        "png": r.info.get("png"),
    }


def run_document(results: Iterable[BenchResult], calibrations: dict[str, Calibration]) -> dict:
    return {"schema": SCHEMA, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "calibrations": {k: {"board": c.board, "pystones": c.pystones, "reference": c.reference,
                                 "reference_pystones": round(c.reference_pystones, 1), "factor": round(c.factor, 4)}
                             for k, c in calibrations.items()},
            "benchmarks": [result_to_dict(r) for r in results]}


def merge_runs(documents: Iterable[dict]) -> dict:
    """One run document of several (under pytest-xdist each worker measured some tests): the
    benchmarks of all, in name order, and every calibration."""
    merged = run_document([], {})
    for doc in documents:
        merged["benchmarks"] += doc["benchmarks"]
        merged["calibrations"].update(doc["calibrations"])
    merged["benchmarks"].sort(key=lambda b: b["name"])
    return merged


def calibrations_of(document: dict) -> dict[str, Calibration]:
    """A run document's calibrations as records, by board id."""
    return {key: Calibration(board=c["board"], board_id=key, pystones=c["pystones"], reference=c["reference"],
                             reference_pystones=c["reference_pystones"], factor=c["factor"])
            for key, c in document["calibrations"].items()}


def results_of(document: dict) -> list[BenchResult]:
    """A run document's benchmarks as records, with what the table and the verdicts read (a run
    file keeps no durations, only their histogram): how the xdist controller tables what its
    workers measured."""
    calibrations = calibrations_of(document)
    results = []
    for b in document["benchmarks"]:
        est = b.get("estimate")
        scale = None
        if est is not None:
            scale = calibrations.get(b["board_id"]) or Calibration(
                board=b["board"], board_id=b["board_id"], pystones=0.0, reference=est["for"],
                reference_pystones=0.0, factor=est["factor"])
        alloc = b.get("alloc", {})
        results.append(BenchResult(
            name=b["name"], target=b["target"], board=b["board"], board_id=b["board_id"], raw=Stats(**b["raw"]),
            stats=Stats(**b["stats"]), overhead_us=b["overhead_us"], tick_us=b["tick_us"],
            alloc_median=alloc.get("median_bytes", 0.0), alloc_max=alloc.get("max_bytes", 0),
            gc_collections=alloc.get("gc_collections", 0), blocks=list(b["blocks"]), kind=b["kind"], gc=b["gc"],
            scale=scale, estimate=Stats(**est["stats"]) if est is not None else None, budget=b["budget"],
            comparison=b["comparison"], info={"png": b["png"]} if b.get("png") else {}))
    return results


def write_run(folder: Path, document: dict) -> Path:
    """The run's JSON file under folder/runs/ (a new file each run)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(folder) / "runs" / f"{stamp}-{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1))
    return path


def baseline_path(folder: Path, name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise BenchError(f"baseline name {name!r}: use a plain name like 'main' or 'v1.2'")
    return Path(folder) / "baselines" / f"{name}.json"


def save_baseline(folder: Path, name: str, document: dict) -> Path:
    """Store this run as baseline NAME; benchmarks of an existing baseline not run now are kept."""
    path = baseline_path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        try:
            old = json.loads(path.read_text())
            fresh = {b["name"] for b in document["benchmarks"]}
            document = dict(document, benchmarks=[b for b in old.get("benchmarks", []) if b["name"] not in fresh]
                            + document["benchmarks"],
                            calibrations={**old.get("calibrations", {}), **document["calibrations"]})
        except (ValueError, KeyError, TypeError):
            pass  # an unreadable old baseline is replaced
    path.write_text(json.dumps(document, indent=1))
    return path


def load_baseline(folder: Path, name: str) -> dict:
    """A saved baseline, checked to be one; one-line errors name the file."""
    path = baseline_path(folder, name)
    if not path.is_file():
        raise BenchError(f"--bench-compare {name}: no baseline at {path}; save one first with --bench-save {name}")
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise BenchError(f"baseline {path} is not valid JSON ({e}); save it again with --bench-save {name}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("benchmarks"), list):
        raise BenchError(f"baseline {path} is not a {SCHEMA} file; save it again with --bench-save {name}")
    doc["_path"] = str(path)
    return doc


def compare_to_baseline(result: BenchResult, baseline: dict, name: str) -> Comparison | None:
    """Compare with the baseline's entry of the same name (None if it has none). A baseline
    measured on another board or profile is an error, never a silent comparison."""
    entry = next((b for b in baseline["benchmarks"] if b.get("name") == result.name), None)
    if entry is None:
        return None
    if entry.get("board_id") != result.board_id:
        raise BenchError(f"baseline {name} ({baseline.get('_path', name)}) measured {result.name} on "
                         f"{entry.get('board_id')}, this run is on {result.board_id}: compare like with like "
                         f"(save a baseline on this board with --bench-save)")
    if not entry.get("blocks"):
        raise BenchError(f"baseline {name}: entry {result.name} has no block medians; save it again")
    cmp = compare(entry["blocks"], result.blocks)
    result.comparison = {"baseline": name, "baseline_median": round(cmp.baseline_median, 3),
                         "current_median": round(cmp.current_median, 3), "delta": round(cmp.delta, 3),
                         "ci": [round(cmp.ci_low, 3), round(cmp.ci_high, 3)], "confidence": cmp.confidence,
                         "verdict": "regressed" if cmp.regressed else "improved" if cmp.improved else "within noise"}
    return cmp


def budget_verdict(r: BenchResult) -> str:
    """What the budget was checked against: the board's own figures; and, where the board is the
    unix port, whether the chip estimate would meet it too (reported, not judged)."""
    stat = r.budget.get("stat", "p99")
    budget_us = r.budget.get("budget_us")
    verdict = f"measured {stat} ok" if r.budget.get("passed") else f"measured {stat} OVER BUDGET"
    if budget_us is not None and r.estimate is not None and r.scale is not None:
        estimated = r.estimate.get(stat)
        verdict += (f"; {r.scale.reference} estimate {estimated:.0f} us "
                    + ("within budget" if estimated <= budget_us else f"OVER {budget_us:g} us budget"))
    return verdict


def table(results: list[BenchResult], calibrations: dict[str, Calibration]) -> list[str]:
    """Lines of the end-of-session table; each row names the board that produced it."""
    head = f"{'benchmark':44} {'board':12} {'median':>8} {'p99':>8} {'max':>8} {'jitter':>7} {'alloc B':>7}  verdict"
    lines = [head, "-" * len(head)]
    for r in results:
        verdict = []
        if r.budget:
            verdict.append(budget_verdict(r))
        if r.comparison:
            verdict.append(f"{r.comparison['verdict']} vs {r.comparison['baseline']} "
                           f"({r.comparison['current_median'] / r.comparison['baseline_median']:.2f}x)")
        if len(r.name) > 44:  # long test ids on a line of their own, whole, instead of cut
            lines.append(r.name)
        name = r.name if len(r.name) <= 44 else "  " + r.name.rpartition("::")[2][-42:]
        s = r.stats
        alloc = f"{r.alloc_median:.0f}" if r.kind == "hot_loop" else "-"
        lines.append(f"{name:44} {r.board[:12]:12} {s.median:8.2f} {s.p99:8.2f} {s.max:8.1f} {s.jitter:7.2f} "
                     f"{alloc:>7}  {', '.join(verdict)}")
        if r.estimate is not None and r.scale is not None:
            e = r.estimate
            lines.append(f"{'  ~ estimate for ' + r.scale.reference:57} {e.median:8.1f} {e.p99:8.1f} {e.max:8.0f}"
                         f" {e.jitter:7.1f}  (x{r.scale.factor:.1f}, not measured)")
    lines.append("times in us, probe overhead subtracted; latency rows are host-clock end-to-end times")
    for c in calibrations.values():
        lines.append("calibration " + c.describe())
    return lines


# -- histogram PNG ---------------------------------------------------------------------------
# A 3x5 pixel font for the labels: digits and the few letters the picture needs.
_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", " ": "000000000000000",
    "u": "000000101101111", "s": "000011010001110", "m": "000000111111101", "i": "010000010010010",
    "n": "000000110101101", "a": "000110001111111", "x": "000101010010101", "p": "000111101111100",
    "e": "000111111100111", "d": "001001111101111", "b": "100100111101111", "g": "000111101111001",
    "t": "010111010010011", "o": "000111101101111", "v": "000101101101010", "r": "000111100100100", "=": "000111000111000", "-": "000000111000000", ":": "000010000010000",
}
_BG, _BAR, _AXIS = (255, 255, 255), (90, 120, 200), (0, 0, 0)
_MEDIAN, _P99, _BUDGET = (0, 150, 0), (220, 0, 0), (240, 140, 0)


def _png(width: int, height: int, pixels: list[bytearray]) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def histogram_png(path: Path, values: list[float], budget: float | None = None, stats: Stats | None = None,
                  width: int = 480, height: int = 240) -> Path:
    """Histogram of durations (us): counts on the y axis, the median (green), p99 (red) and
    budget (orange) marked; a budget beyond the axis is an arrow at its right end, labelled.
    `stats` are the table's own figures (overhead subtracted), so picture and table agree.
    Returns the path written."""
    edges, counts, beyond = histogram(values, bins=60, include=budget)
    stats = stats or summarize(values)
    rows = [bytearray(_BG * width) for _ in range(height)]

    def put(x: int, y: int, c: tuple) -> None:
        if 0 <= x < width and 0 <= y < height:
            rows[y][3 * x:3 * x + 3] = bytes(c)

    def text(x: int, y: int, s: str, c: tuple = _AXIS) -> None:
        for ch in s.lower():
            glyph = _FONT.get(ch, _FONT[" "])
            for i, bit in enumerate(glyph):
                if bit == "1":
                    for dx in range(2):
                        for dy in range(2):
                            put(x + (i % 3) * 2 + dx, y + (i // 3) * 2 + dy, c)
            x += 8

    peak = max(counts) or 1
    left, right, top, bottom = 10 + 8 * len(str(peak)), width - 16, 30, height - 20
    span = edges[-1] - edges[0]
    bar_w = (right - left) / len(counts)
    for i, n in enumerate(counts):
        h = int(n / peak * (bottom - top))
        for x in range(int(left + i * bar_w), max(int(left + (i + 1) * bar_w) - 1, int(left + i * bar_w) + 1)):
            for y in range(bottom - h, bottom):
                put(x, y, _BAR)
    for x in range(left, right):
        put(x, bottom, _AXIS)
    for y in range(top, bottom + 1):  # the y axis: calls per bin, 0 to the tallest bin
        put(left - 1, y, _AXIS)
    text(4, top, str(peak), _AXIS)
    text(left - 12, bottom - 10, "0", _AXIS)

    def mark(v: float, c: tuple) -> None:
        if edges[0] <= v <= edges[-1]:
            x = int(left + (v - edges[0]) / span * (right - left))
            for y in range(top - 4, bottom):
                put(x, y, c)
        elif v > edges[-1]:  # off the axis: an arrow at the right end says where it went
            for k in range(6):
                for y in range(top + 20 - k, top + 21 + k):
                    put(right + 8 - k, y, c)

    mark(stats.median, _MEDIAN)
    mark(stats.p99, _P99)
    if budget is not None:
        mark(budget, _BUDGET)
    text(4, 4, f"min {stats.min:.1f} med {stats.median:.1f} p99 {stats.p99:.1f} max {stats.max:.1f} us", _AXIS)
    text(4, 16, f"n {len(values)}" + (f" over {beyond}" if beyond else "")
         + (f" budget {budget:.0f}" + (" off axis" if budget > edges[-1] else "") if budget is not None else ""),
         _AXIS)
    text(left, bottom + 6, f"{edges[0]:.1f}", _AXIS)
    label = f"{edges[-1]:.1f} us"
    text(right - 8 * len(label), bottom + 6, label, _AXIS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png(width, height, rows))
    return path


def read_png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR (for checks)."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    return struct.unpack(">II", data[16:24])

