"""Hot-loop timing on the device: a probe times a firmware function unmodified; the host does the
statistics (stats.py), the ESP32 estimate (calibration.py) and the reporting (report.py).

The probe is MicroPython code sent through board.exec. It resolves a dotted name on the board
("app.step", or "app.Monitor.step" on an instance built by a `setup` expression), calls it for a
warm-up, then times each call with the board's own clock (ticks_us, or ticks_cpu where it counts
CPU cycles) and reads gc.mem_alloc() after each call for its heap allocation. The same loop
around an empty function measures the probe's own cost, and a fixed reference kernel timed
beside every call lets baselines compare the target relative to the machine's speed of the moment. Durations come back as base64 of an
array('i'), so 10,000 samples cost 40 KB of serial traffic and no per-sample formatting.
On the simulated board the probe reads the unix port's built-in clock, not the simulator's
board clock: it measures CPU time, whatever the time mode.

"""

from __future__ import annotations

import ast
import binascii
import sys
from array import array
from dataclasses import dataclass, field
from typing import Any

from .calibration import scaled
from .result import BenchResult, Calibration, board_id
from .stats import block_medians, summarize, trimmed_mean
from ..errors import BenchError, BoardError

GC_MODES = ("collect", "running", "off")
CLOCKS = ("auto", "us", "cpu")


# Device side. Runs at the REPL's top level, so `setup` evaluates where the prelude's imports
# live. Only the two clock reads and the call sit between t0 and t1.
_PROBE = r"""
def _hil_probe(target, setup, n, warm, dur_us, gcmode, clock, per_alloc):
    import sys, gc, array, binascii
    try:
        from _simcore import builtin as bi  # simulated board: the port's clock, not the shim's
    except ImportError:
        bi = __import__                     # a chip: `time` is the built-in
    t = bi('time')
    parts = target.split('.')
    try:
        obj = __import__(parts[0])
    except ImportError as e:
        print('HILPROBE-ERR missing module %r is not on the board (%s)' % (parts[0], e))
        return
    owner = None
    for i in range(1, len(parts)):
        if not hasattr(obj, parts[i]):
            print('HILPROBE-ERR missing %r has no attribute %r' % ('.'.join(parts[:i]), parts[i]))
            return
        owner, obj = obj, getattr(obj, parts[i])
    if setup:
        inst = eval(setup)
        if not hasattr(inst, parts[-1]):
            print('HILPROBE-ERR missing the setup object (%s) has no attribute %r' % (type(inst).__name__, parts[-1]))
            return
        obj = getattr(inst, parts[-1])
    elif isinstance(owner, type):
        print('HILPROBE-ERR setup %r is a method of class %s: pass setup= an expression that builds the instance' % (target, owner.__name__))
        return
    if not callable(obj):
        print('HILPROBE-ERR missing %r is a %s, not a function' % (target, type(obj).__name__))
        return
    hz = 1000000
    clk = t.ticks_us
    if clock != 'us':
        a = t.ticks_cpu()
        b = t.ticks_cpu()
        if a != b:
            try:
                import machine
                hz = machine.freq()
                clk = t.ticks_cpu
            except (ImportError, AttributeError):
                if clock == 'cpu':
                    print('HILPROBE-ERR clock machine.freq() is missing, so ticks_cpu has no unit: use clock="us"')
                    return
        elif clock == 'cpu':
            print('HILPROBE-ERR clock ticks_cpu does not count on this board: use clock="us"')
            return
    d = t.ticks_diff
    al = gc.mem_alloc if per_alloc else (lambda: 0)
    def empty():
        pass
    def ref():
        x = 0
        for k in range(40):
            x += k * 3
        return x
    def run(f, m, dts, das, rts=None):
        i = 0
        start = t.ticks_us()
        m0 = al()
        try:
            while i < m:
                if rts is not None and not i & 3:
                    r0 = clk(); ref(); r1 = clk()
                    rts[i >> 10][(i >> 2) & 255] = d(r1, r0)
                t0 = clk(); f(); t1 = clk()
                m1 = al()
                dts[i >> 8][i & 255] = d(t1, t0)
                das[i >> 8][i & 255] = m1 - m0
                i += 1
                if m1 > limit:
                    gc.collect()
                    m1 = al()
                m0 = m1
                if dur_us and d(t.ticks_us(), start) >= dur_us:
                    break
        except Exception as e:
            print('HILPROBE-ERR raised %r raised %s on call %d: %s' % (target, type(e).__name__, i + 1, e))
            sys.print_exception(e)
            return -1
        return i
    def chunks(k):
        # 256 samples per array: a fragmented heap (the chip's, after the firmware loaded)
        # rarely has one free block big enough for all of them.
        return [array.array('i', bytes(1024)) for _ in range((k + 255) >> 8)]
    ovn = min(n, 1000)
    gc.collect()
    dts = chunks(n)
    das = chunks(n)
    ovt = chunks(ovn)
    rts = chunks((n + 3) >> 2)
    try:
        for _ in range(warm):
            obj()
    except Exception as e:
        print('HILPROBE-ERR raised %r raised %s during warm-up: %s' % (target, type(e).__name__, e))
        sys.print_exception(e)
        return
    gc.collect()
    heap = gc.mem_alloc() + gc.mem_free()
    limit = heap * 3 // 4 if gcmode == 'off' and per_alloc else heap * 2
    run(empty, ovn, ovt, das)
    if gcmode != 'running':
        gc.collect()
    if gcmode == 'off':
        gc.disable()
    t_start = t.ticks_ms()
    try:
        got = run(obj, n, dts, das, rts)
    finally:
        gc.enable()
    if got < 0:
        return
    wall = t.ticks_diff(t.ticks_ms(), t_start)
    impl = getattr(sys.implementation, '_machine', sys.platform)
    print('HILPROBE', repr({'n': got, 'ovn': ovn, 'hz': hz, 'clock': 'us' if hz == 1000000 else 'cpu',
                           'heap': heap, 'wall_ms': wall, 'platform': sys.platform, 'machine': impl,
                           'byteorder': sys.byteorder}))
    for tag, arrs, k in (('dt', dts, got), ('da', das, got), ('ot', ovt, ovn), ('rt', rts, (got + 3) >> 2)):
        for c in range(0, k, 64):
            # 64 samples a line: small strings fit the gaps of a fragmented heap
            mv = memoryview(arrs[c >> 8])
            print(tag + ':' + binascii.b2a_base64(mv[c & 255:(c & 255) + min(64, k - c)]).decode().strip())
"""


@dataclass
class ProbeRun:
    """Raw samples of one probe run, in microseconds, plus where they came from."""

    target: str
    board: str                 # the board's name (unix#3, serial:/dev/ttyUSB0)
    board_id: str              # what baselines must match: kind, platform and profile
    durations_us: list[float]
    allocs: list[int]          # bytes allocated per call; negative: a collection ran in it
    overhead_us: list[float]   # the same loop around an empty function
    reference_us: list[float]  # a fixed pure-Python kernel timed before every 4th call
    tick_us: float             # clock resolution
    gc: str
    warmup: int
    wall_s: float
    info: dict = field(default_factory=dict)


def _install_probe(board: Any) -> None:
    # Asked every time (one round trip): a reset or another test may have cleared the board's globals.
    if board.eval("'_hil_probe' in globals()") is not True:
        board.exec(_PROBE)


def probe(board: Any, target: str, *, setup: str | None = None, prelude: str | None = None,
          iterations: int = 2000, duration_s: float | None = None, warmup: int = 200,
          gc: str = "collect", clock: str = "auto", alloc: bool = True,
          timeout: float | None = None) -> ProbeRun:
    """Time `target` (a dotted name on the board) `iterations` times, or for `duration_s` (at
    most `iterations` calls). gc: collect (collect first, collections run as on the chip),
    running (no collection first), off (no collection inside a timed call; the probe collects
    between calls when the heap runs low). clock: auto (ticks_cpu where it counts CPU cycles,
    else ticks_us), us, cpu. alloc=False skips gc.mem_alloc() per call (it walks the heap)."""
    if gc not in GC_MODES:
        raise BenchError(f"gc={gc!r}: use one of {', '.join(GC_MODES)}")
    if clock not in CLOCKS:
        raise BenchError(f"clock={clock!r}: use one of {', '.join(CLOCKS)}")
    if not target or any(not p.isidentifier() for p in target.split(".")):
        raise BenchError(f"target {target!r} is not a dotted name like 'app.step' or 'app.Monitor.step'")
    if iterations < 10:
        raise BenchError(f"iterations={iterations}: time at least 10 calls")
    dur_us = int(duration_s * 1e6) if duration_s else 0
    wait = timeout or max(getattr(board, "timeout", 10.0), 30.0 + (duration_s or 0) * 2)
    try:
        _install_probe(board)  # compiled before the prelude's imports fill the heap
        if prelude:
            board.exec(prelude, timeout=wait)
        out = board.exec(f"_hil_probe({target!r}, {setup!r}, {iterations}, {warmup}, {dur_us}, "
                         f"{gc!r}, {clock!r}, {alloc!r})", timeout=wait)
    except BoardError as e:
        first = str(e).splitlines()[0]
        if "MemoryError" in first:
            first += " (the probe keeps 8 bytes per iteration on the board's heap: ask for fewer iterations=)"
        raise BenchError(f"{getattr(board, 'name', 'board')}: timing {target} failed: {first}"
                         + ("\n" + "\n".join(str(e).splitlines()[1:]) if "\n" in str(e) else "")) from None
    return _parse(board, target, out, gc, warmup)


def _parse(board: Any, target: str, out: str, gc: str, warmup: int) -> ProbeRun:
    name = getattr(board, "name", "board")
    header, data = None, {"dt": [], "da": [], "ot": [], "rt": []}
    for line in out.splitlines():
        if line.startswith("HILPROBE-ERR "):
            kind, _, why = line[len("HILPROBE-ERR "):].partition(" ")
            rest = out[out.index(line) + len(line):].strip()
            hint = {"missing": " (is the firmware deployed? check the name)"}.get(kind, "")
            raise BenchError(f"{name}: cannot time {target}: {why}{hint}" + (f"\n{rest}" if rest else ""))
        if line.startswith("HILPROBE "):
            header = ast.literal_eval(line[len("HILPROBE "):])
        elif line[:3] in ("dt:", "da:", "ot:", "rt:"):
            data[line[:2]].append(line[3:])
    if header is None:
        port = getattr(board, "port", None)
        code = f" (process exit code {port.exit_codes[-1]})" if port is not None and port.exit_codes else ""
        raise BenchError(f"{name}: timing {target} stopped without a result: the firmware crashed, exited or "
                         f"reset the board mid-run{code}" + (f"; output: {out[-300:]!r}" if out.strip() else ""))

    def ints(tag: str) -> list[int]:
        arr = array("i")
        for chunk in data[tag]:
            arr.frombytes(binascii.a2b_base64(chunk))
        if header["byteorder"] != sys.byteorder:
            arr.byteswap()
        return arr.tolist()

    unit = 1e6 / header["hz"]
    durations = [v * unit for v in ints("dt")]
    overhead = [v * unit for v in ints("ot")]
    if len(durations) != header["n"]:
        raise BenchError(f"{name}: the probe for {target} sent {len(durations)} of {header['n']} samples")
    return ProbeRun(target=target, board=name, board_id=board_id(board, header["platform"]),
                    durations_us=durations, allocs=ints("da"), overhead_us=overhead,
                    reference_us=[v * unit for v in ints("rt")], tick_us=unit,
                    gc=gc, warmup=warmup, wall_s=header["wall_ms"] / 1000, info=header)


def analyse(run: ProbeRun, name: str | None = None, calibration: "Calibration | None" = None) -> BenchResult:
    """Statistics of a probe run: raw, overhead-subtracted, allocation, block medians."""
    overhead = trimmed_mean(run.overhead_us)
    raw = summarize(run.durations_us, run.tick_us)
    net_samples = [max(0.0, v - overhead) for v in run.durations_us]
    allocs = sorted(a for a in run.allocs if a >= 0) or [0]
    result = BenchResult(name=name or run.target, target=run.target, board=run.board, board_id=run.board_id,
                         raw=raw, stats=raw.minus(overhead), overhead_us=overhead, tick_us=run.tick_us,
                         alloc_median=float(allocs[len(allocs) // 2]), alloc_max=allocs[-1],
                         gc_collections=sum(1 for a in run.allocs if a < 0),
                         blocks=normalized_blocks(net_samples, run.reference_us, run.tick_us),
                         durations_us=net_samples,
                         gc=run.gc, wall_s=run.wall_s, info=run.info)
    if calibration is not None:
        result.scale = calibration
        if calibration.factor != 1.0:
            result.estimate = scaled(result.stats, calibration.factor)
    return result


def normalized_blocks(durations_us: list[float], reference_us: list[float], tick_us: float) -> list[float]:
    """Block medians of the target in units of the reference kernel timed beside it. The host's
    load, CPU frequency and a busy sibling hyperthread slow both alike, so the ratio carries
    the target's own change from run to run, not the machine's mood."""
    targets = block_medians(durations_us, tick_us)
    if not reference_us:
        return targets
    refs = block_medians(reference_us, tick_us, blocks=len(targets))
    return [t / r if r > 0 else t for t, r in zip(targets, refs)]


