# The board's one clock (device side): time, machine.Timer, lightsleep and asyncio follow it.
# Board time is microseconds since the Simulator started, continuous across resets and deep
# sleeps (the host hands the resume point in the boot record); ticks_* count from this boot.
#   real:    board time flows with the wall clock; sleeps block on the control channel.
#   fast:    board time flows with the wall clock, and every sleep jumps it to the deadline.
#   stepped: board time moves only when the host advances it (sim.advance), and only inside
#            waits (sleeps, poll, idle, lightsleep): code runs in no board time. A wait past
#            the host's horizon reports "idle" and blocks until the next advance.
# It sits right above the channel (_simcore) and below every shim: select's waits use the
# primitives here (next_wake, jump, stepped_wait) to follow the same clock as sleeps.
import _simcore

_t = _simcore.port_time
_ns = _t.time_ns
MODE = _simcore.boot["mode"]
BOOT_US = _simcore.boot["clock"]
_real0 = _ns() // 1000
_offset = BOOT_US     # real/fast: board time = real microseconds since launch + _offset
_now = BOOT_US        # stepped: board time
_limit = BOOT_US      # stepped: how far the host has advanced the clock
_timers = []          # sorted [due_us, seq, callback, period_us or 0]
_seq = 0
_firing = False
_in_wait = False
_idle_sent = -1
# Seconds since 2000-01-01 (the ESP32 port's epoch) at board time 0; machine.RTC can change it.
rtc_base = _simcore.boot["rtc_epoch"]


def now_us():
    if MODE == "stepped":
        return _now
    return _ns() // 1000 - _real0 + _offset


def since_boot_us():
    return now_us() - BOOT_US


def jump(us):
    """Move board time forward by us at once (a wait that need not take wall time)."""
    global _offset, _now
    if us <= 0:
        return
    if MODE == "stepped":
        _now += us
    else:
        _offset += us


def add_timer(due_us, callback, period_us=0):
    """Schedule callback() at board time due_us (every period_us if > 0); returns a handle."""
    global _seq
    _seq += 1
    entry = [due_us, _seq, callback, period_us]
    _insert(entry)
    return entry


def _insert(entry):
    i = 0
    while i < len(_timers) and _timers[i][0] <= entry[0]:
        i += 1
    _timers.insert(i, entry)


def cancel(entry):
    if entry in _timers:
        _timers.remove(entry)


def hold_timers(held):
    """While held (machine.disable_irq), due timers wait, as they do while a callback runs."""
    global _firing
    _firing = held


def next_wake(deadline):
    """When a wait until board time `deadline` (None: no deadline) must wake up: then, or at
    the next timer's due time if that comes first and timers are not held."""
    if _timers and not _firing and (deadline is None or _timers[0][0] < deadline):
        return _timers[0][0]
    return deadline


def stepped_wait(nxt, check):
    """One step of a wait in stepped time, until board time nxt (None: no deadline).
    check(timeout_ms) looks for events (0: without blocking, -1: until some come) and returns
    them. Within what the host has advanced: check(0), and the clock moves to nxt if there was
    nothing. Beyond it: the clock moves to the host's horizon and reports idle there (so
    sim.advance returns), then check(-1) blocks until the host advances or an event comes."""
    global _now
    if nxt is not None and nxt <= _limit:
        res = check(0)
        if not res:
            _now = max(_now, nxt)
        return res
    _now = max(_now, _limit)
    _report_idle()
    return check(-1)


def fire_due():
    """Run the callbacks of timers that are due (not re-entrant: a callback's sleep won't nest)."""
    global _firing
    if _firing or not _timers:
        return
    _firing = True
    try:
        while _timers and _timers[0][0] <= now_us():
            entry = _timers.pop(0)
            if entry[3]:
                entry[0] += entry[3]
                _insert(entry)
            entry[2]()
    finally:
        _firing = False


def tick():
    """Shim entry hook: apply host commands, run due timers. Cheap when nothing is pending."""
    p = _simcore.poller
    if p is not None:
        for _ in p.ipoll(0):
            _simcore.read()
            break
    if _timers and _timers[0][0] <= now_us():
        fire_due()


def sleep_us(d):
    """Sleep d microseconds of board time, servicing the channel and timers meanwhile."""
    global _in_wait, _now
    if d < 0:
        raise ValueError("sleep: negative time %r" % d)
    deadline = now_us() + d
    outer = _in_wait
    _in_wait = True
    try:
        while True:
            fire_due()
            t = now_us()
            if t >= deadline:
                return
            nxt = deadline
            if _timers and _timers[0][0] < nxt and not _firing:
                nxt = _timers[0][0]
            if MODE == "real":
                if nxt - t < 1000:
                    _simcore.poll()
                    _t.sleep_us(nxt - t)
                else:
                    _simcore.wait((nxt - t) // 1000)
            elif MODE == "fast":
                _simcore.poll()
                jump(nxt - now_us())
            else:
                _simcore.poll()
                if MODE != "stepped":
                    continue
                if nxt <= _limit:
                    _now = max(_now, nxt)
                else:
                    _now = max(_now, _limit)
                    _report_idle()
                    _simcore.wait(-1)
    finally:
        _in_wait = outer


def _report_idle():
    global _idle_sent
    if _idle_sent != _now:
        _idle_sent = _now
        _simcore.send({"t": "idle", "c": _now})


def _on_adv(msg):
    """Host advanced the clock by msg["us"]: stepped raises the horizon, other modes jump."""
    global _limit
    us = msg["us"]
    if MODE == "stepped":
        # Only waits move a stepped clock (code runs in no time): the next sleep, poll or
        # idle() goes to its deadline, or to this horizon if that comes first.
        _limit += us
    else:
        jump(us)
    _simcore.send({"t": "advanced", "n": msg["n"], "c": now_us()})


def _on_gone(_):
    # Stepped time needs the host; without it the board would sleep forever.
    global MODE, _offset
    if MODE == "stepped":
        _offset = _now - (_ns() // 1000 - _real0)
        MODE = "fast"


_simcore.handlers["adv"] = _on_adv
# sync: every command sent before it is applied by now; the ack tells the host the clock too.
_simcore.handlers["sync"] = lambda msg: _simcore.send({"t": "ack", "n": msg["n"], "c": now_us()})
_simcore.handlers["gone"] = _on_gone
if MODE == "stepped" and not _simcore.connected():
    print("[sim] stepped time needs the host's control channel: using fast time")
    MODE = "fast"
