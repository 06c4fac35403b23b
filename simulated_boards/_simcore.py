# Simulator core, device side: the control channel to the host and the board's input state.
# Runs ON the MicroPython unix port; imported by the shims (machine, network, esp32, time, ...).
#
# Channel: one TCP connection to 127.0.0.1:<port from MPSIM_CHANNEL>, JSON lines both ways.
# The shims call poll() at each entry: one select.poll.ipoll(0) (about 0.4 us), so the hot loop
# pays almost nothing and host updates are seen at the very next shim call. Sleeps block on the
# channel instead of sleeping, so commands also arrive while the firmware sleeps.
# Host gone (no MPSIM_CHANNEL, or the connection drops): the board runs on alone; inputs keep
# their last values, outputs are dropped, stepped time falls back to fast time.
import sys


def builtin(name):
    """Import the unix port's built-in module `name`, bypassing our shadowing shim."""
    saved = sys.path[:]
    mine = sys.modules.pop(name, None)
    del sys.path[:]
    try:
        return __import__(name)
    finally:
        sys.path.extend(saved)
        if mine is not None:
            sys.modules[name] = mine


_time = builtin("time")
_socket = builtin("socket")
_select = builtin("select")
_os = builtin("os")
import json

ROOT = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."


class SimulatorBug(Exception):
    """Raised when the simulator itself fails: the fault is in simulated_boards/, not the firmware."""


def bug(where, exc):
    """Wrap an unexpected exception from shim internals so it names the shim, not the firmware."""
    msg = "simulator bug in %s: %s: %s (report it; the firmware is not at fault)" % (
        where, type(exc).__name__, exc)
    send({"t": "err", "msg": msg})
    return SimulatorBug(msg)


# --- board state set by the host -----------------------------------------------------------
boot = {"cause": 1, "wake": 0, "clock": 0, "rtc_epoch": 946684800, "rtc_mem": "",
        "mode": "real", "profile": None}
pins = {}       # pin id -> level or signal dict (inputs driven by the host)
adc = {}        # pin id -> volts or signal dict
parts = {}      # i2c address -> part object
part_specs = {}  # i2c address -> (name, values) as last sent by the host
failed = {}     # i2c address -> True while the part stops answering
uart_rx = {}    # uart id -> bytearray of bytes the host fed
wifi = {"networks": None, "connect_s": 0.2, "refuse_until": 0, "drop": 0, "scan": []}
handlers = {}   # message type -> callable(msg), registered by shims (pins' irq, clock, ...)

_sock = None
_poller = None
_buf = b""
_standalone = True


def _load_profile(name):
    with open(ROOT + "/profiles/" + name + ".json") as f:
        return json.load(f)


def _connect():
    global _sock, _poller, _standalone
    addr = _os.getenv("MPSIM_CHANNEL")
    boot["profile"] = _load_profile(_os.getenv("MPSIM_PROFILE") or "esp32")
    boot["mode"] = _os.getenv("MPSIM_TIME") or "real"
    if not addr:
        return
    host, port = addr.rsplit(":", 1)
    s = _socket.socket()
    try:
        s.connect(_socket.getaddrinfo(host, int(port))[0][-1])
    except OSError as e:
        print("[sim] control channel %s unreachable (%s): running standalone" % (addr, e))
        s.close()
        return
    s.setsockopt(6, 1, 1)  # TCP_NODELAY: each message is one small write
    _sock = s
    _standalone = False
    send({"t": "hello", "token": _os.getenv("MPSIM_TOKEN") or ""})
    p = _select.poll()
    p.register(s, _select.POLLIN)
    _poller = p
    # The host answers with the boot record (reset cause, clock, profile, inputs set so far).
    while True:
        if not p.poll(10000):
            print("[sim] host sent no boot record within 10 s: running standalone")
            _drop()
            return
        if _read(wait_boot=True):
            break
        if _sock is None:
            return


def _drop():
    global _sock, _poller, _standalone
    if _sock is not None:
        try:
            _sock.close()
        except OSError:
            pass
    _sock = None
    _poller = None
    _standalone = True


def connected():
    return _sock is not None


def send(msg):
    """Send one message to the host; silently dropped when the host is gone."""
    if _sock is None:
        return
    try:
        _sock.write(json.dumps(msg) + "\n")
    except OSError:
        _drop()


def poll():
    """Apply pending host commands. Called at every shim entry; costs one ipoll(0)."""
    if _poller is not None:
        for _ in _poller.ipoll(0):
            _read()
            break


def wait(timeout_ms):
    """Block up to timeout_ms (real) for host commands and apply them. True if any arrived."""
    if pending_exit is not None:
        raise SystemExit(pending_exit)
    if _poller is None:
        if timeout_ms > 0:
            _time.sleep_ms(timeout_ms)
        return False
    if _poller.poll(timeout_ms):
        _read()
        return True
    return False


def _read(wait_boot=False):
    # Handlers (pin IRQs, resets) run inside this call; hide the poller meanwhile so their shim
    # calls do not read the channel again: a handler sees the inputs as of its own event.
    global _poller
    p = _poller
    _poller = None
    try:
        return _read_lines(wait_boot)
    finally:
        if _poller is None and _sock is not None:
            _poller = p


def _read_lines(wait_boot):
    global _buf
    try:
        # Small reads: a 4 KB allocation per read fails on a fragmented 110 KB heap, and the
        # MemoryError would look like the firmware's. (readinto would block until it is full.)
        data = _sock.recv(256)
    except OSError:
        data = b""
    if not data:
        print("[sim] host closed the control channel: running standalone")
        _drop()
        _fire("gone", None)
        return False
    _buf += data
    return drain(wait_boot)


def drain(until_boot=False):
    """Apply the complete messages received so far. Until the boot record is in, stop right
    after it: the shims' handlers (the clock's, the pins') are not registered yet."""
    global _buf
    while b"\n" in _buf:
        line, _buf = _buf.split(b"\n", 1)
        msg = json.loads(line)
        if msg["t"] == "boot":
            _apply_boot(msg)
            if until_boot:
                return True
        else:
            _dispatch(msg)
    return False


def _apply_boot(msg):
    for k in ("cause", "wake", "clock", "rtc_epoch", "rtc_mem", "mode", "profile"):
        if k in msg:
            boot[k] = msg[k]
    wifi.update(msg.get("wifi", {}))
    # Signals set before this boot start at its first instant.
    c = boot["clock"] / 1e6
    for k, v in msg.get("pins", {}).items():
        pins[int(k)] = _t0(v, c)
    for k, v in msg.get("adc", {}).items():
        adc[int(k)] = _t0(v, c)
    for a, spec in msg.get("parts", {}).items():
        for k in spec["values"]:
            _t0(spec["values"][k], c)
        _set_part(int(a), spec["name"], spec["values"], spec.get("trim"))
    for a, mode in msg.get("failed", {}).items():
        failed[int(a)] = mode
    for k, v in msg.get("uart", {}).items():
        uart_rx[int(k)] = bytearray(bytes.fromhex(v))


def _t0(v, c):
    if isinstance(v, dict) and "t0" not in v:
        v["t0"] = c
    return v


def stamp(v):
    """Signals start when the board receives them: record that board time (seconds) as t0."""
    if isinstance(v, dict) and "t0" not in v:
        import _simclock
        v["t0"] = _simclock.now_us() / 1e6
    return v


def _set_part(addr, name, values, trim=None):
    import _simparts
    for k in values:
        values[k] = stamp(values[k])
    p = parts.get(addr)
    if p is None or p.NAME != name:
        p = _simparts.create(name, addr)
        parts[addr] = p
    if trim:
        p.configure(trim)
    p.set(values)


def _dispatch(msg):
    t = msg["t"]
    if t == "reset_ack":
        global _reset_acked
        _reset_acked = True
        return
    if t == "interrupt":
        # Ctrl-C from the host, raised at a shim call: a safe point, never inside a garbage
        # collection (a SIGINT there leaves the unix port's heap locked for good).
        raise KeyboardInterrupt
    try:
        if t == "pin":
            old = pins.get(msg["id"])
            pins[msg["id"]] = stamp(msg["v"])
            _fire("pin", (msg["id"], old, msg["v"]))
        elif t == "adc":
            adc[msg["id"]] = stamp(msg["v"])
        elif t == "part":
            _set_part(msg["addr"], msg["name"], msg["values"], msg.get("trim"))
        elif t == "i2cfail":
            if msg["on"]:
                failed[msg["addr"]] = msg["on"]
            else:
                failed.pop(msg["addr"], None)
        elif t == "uart":
            uart_rx.setdefault(msg["id"], bytearray()).extend(bytes.fromhex(msg["data"]))
        elif t == "wifi":
            wifi.update(msg["cfg"])
        elif t == "wifi_drop":
            import _simclock
            now = _simclock.now_us()
            wifi["dropped_at"] = now
            wifi["refuse_until"] = now + int(msg["refuse_s"] * 1000000)
        elif t == "brownout":
            import _simclock
            reset_now("brownout", _simclock.now_us(), _simclock.rtc_base)
        elif t == "sync":
            import _simclock
            send({"t": "ack", "n": msg["n"], "c": _simclock.now_us()})  # the host learns the clock
        else:
            _fire(t, msg)
    except Exception as e:
        raise bug("_simcore handling host command %r" % t, e)


def _fire(t, arg):
    h = handlers.get(t)
    if h is not None:
        h(arg)


def value(v, now_s):
    """Evaluate an input: a number, or a signal dict evaluated at board time now_s (seconds)."""
    if not isinstance(v, dict):
        return v
    import _simsignal
    return _simsignal.evaluate(v, now_s)


_connect()


# --- resets: tell the host, then end the process with the cause's exit code ------------------
from _simprotocol import EXIT_CODES  # the board layer relaunches after any of them
pending_exit = None
_reset_acked = False  # the host has recorded our reset report (see reset_now)
rtc_memory = bytearray(bytes.fromhex(boot["rtc_mem"] or ""))


def reset_now(cause, clock_us, rtc_base, **extra):
    """End this run as the chip would: report cause and state to keep, then exit the process."""
    global pending_exit
    msg = {"t": "reset", "cause": cause, "c": clock_us, "rtc_base": rtc_base,
           "rtc_mem": bytes(rtc_memory).hex()}
    msg.update(extra)
    send(msg)
    # Wait (a second at most) for the host to have recorded the report, so it knows of the
    # reset before the REPL's end-of-output does: the board layer tells a reset by it.
    global _reset_acked
    _reset_acked = False
    deadline = _time.ticks_add(_time.ticks_ms(), 1000)
    while not _reset_acked and _sock is not None and _time.ticks_diff(deadline, _time.ticks_ms()) > 0:
        wait(_time.ticks_diff(deadline, _time.ticks_ms()))
    pending_exit = EXIT_CODES[cause]
    # A bare `except:` in the firmware may swallow SystemExit, but a chip reset cannot be
    # swallowed: every later shim call polls this object, which raises it again (zero cost
    # to the hot loop until then).
    global _poller
    _poller = _Exiting()
    raise SystemExit(pending_exit)


class _Exiting:
    def ipoll(self, *a):
        raise SystemExit(pending_exit)

    poll = ipoll
