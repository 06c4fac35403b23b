# Simulator core, device side: the control channel to the host, the boot record, resets, and
# the way to the port's built-ins. Runs ON the MicroPython unix port; the bottom layer every shim
# builds on, so it imports no other shim: the board's clock (_simclock) and the inputs the host
# set (_siminputs) sit above it and register their handlers for the host's messages here.
#
# Channel: one TCP connection to 127.0.0.1:<port from MPSIM_CHANNEL>, JSON lines both ways.
# The shims call poll() at each entry: one select.poll.ipoll(0) (about 0.4 us), so the hot loop
# pays almost nothing and host updates are seen at the very next shim call. Sleeps block on the
# channel instead of sleeping, so commands also arrive while the firmware sleeps.
# Host gone (no MPSIM_CHANNEL, or the connection drops): the board runs on alone; inputs keep
# their last values, outputs are dropped, stepped time falls back to fast time.
import sys
from _simprotocol import EXIT_CODES  # the board layer relaunches after any of them


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


# The port's own modules, for the shims that wrap them (time, select, socket) and for the channel.
port_time = builtin("time")
port_socket = builtin("socket")
port_select = builtin("select")
port_os = builtin("os")
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


# --- this launch, as the host's boot record describes it ----------------------------------------
boot = {"cause": 1, "wake": 0, "clock": 0, "rtc_epoch": 946684800, "rtc_mem": "",
        "mode": "real", "profile": None}
_BOOT_KEYS = ("cause", "wake", "clock", "rtc_epoch", "rtc_mem", "mode", "profile")
_boot_inputs = {}  # the rest of the boot record (inputs set so far) until _siminputs takes it
# Message type -> callable(msg), registered by the layers above (the clock's "adv", the inputs'
# "pin", ...); "gone" is called with None when the host closes the channel.
handlers = {}

sock = None     # the channel's socket while the host is there (select.poll watches it too)
# What shim calls poll (one ipoll(0) per call): None while there is no host, or while a host
# command is being applied; after a reset, an object whose polls raise SystemExit again.
poller = None
_buf = b""
_standalone = True


def _load_profile(name):
    with open(ROOT + "/profiles/" + name + ".json") as f:
        return json.load(f)


def _connect():
    global sock, poller, _standalone
    addr = port_os.getenv("MPSIM_CHANNEL")
    boot["profile"] = _load_profile(port_os.getenv("MPSIM_PROFILE") or "esp32")
    boot["mode"] = port_os.getenv("MPSIM_TIME") or "real"
    if not addr:
        return
    host, port = addr.rsplit(":", 1)
    s = port_socket.socket()
    try:
        s.connect(port_socket.getaddrinfo(host, int(port))[0][-1])
    except OSError as e:
        print("[sim] control channel %s unreachable (%s): running standalone" % (addr, e))
        s.close()
        return
    s.setsockopt(6, 1, 1)  # TCP_NODELAY: each message is one small write
    sock = s
    _standalone = False
    send({"t": "hello", "token": port_os.getenv("MPSIM_TOKEN") or ""})
    p = port_select.poll()
    p.register(s, port_select.POLLIN)
    poller = p
    # The host answers with the boot record (reset cause, clock, profile, inputs set so far).
    while True:
        if not p.poll(10000):
            print("[sim] host sent no boot record within 10 s: running standalone")
            _drop()
            return
        if read(wait_boot=True):
            break
        if sock is None:
            return


def _drop():
    global sock, poller, _standalone
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
    sock = None
    poller = None
    _standalone = True


def connected():
    return sock is not None


def send(msg):
    """Send one message to the host; silently dropped when the host is gone."""
    if sock is None:
        return
    try:
        sock.write(json.dumps(msg) + "\n")
    except OSError:
        _drop()


def poll():
    """Apply pending host commands. Called at every shim entry; costs one ipoll(0)."""
    if poller is not None:
        for _ in poller.ipoll(0):
            read()
            break


def wait(timeout_ms):
    """Block up to timeout_ms (real) for host commands and apply them. True if any arrived."""
    if pending_exit is not None:
        raise SystemExit(pending_exit)
    if poller is None:
        if timeout_ms > 0:
            port_time.sleep_ms(timeout_ms)
        return False
    if poller.poll(timeout_ms):
        read()
        return True
    return False


def read(wait_boot=False):
    """Read what the host sent (the channel is readable) and apply its complete messages."""
    # Handlers (pin IRQs, resets) run inside this call; hide the poller meanwhile so their shim
    # calls do not read the channel again: a handler sees the inputs as of its own event.
    global poller
    p = poller
    poller = None
    try:
        return _read_lines(wait_boot)
    finally:
        if poller is None and sock is not None:
            poller = p


def _read_lines(wait_boot):
    global _buf
    try:
        # Small reads: a 4 KB allocation per read fails on a fragmented 110 KB heap, and the
        # MemoryError would look like the firmware's. (readinto would block until it is full.)
        data = sock.recv(256)
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
    after it: the handlers of the layers above (the clock's, the inputs') are not registered
    yet; _siminputs drains the rest once they are."""
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
    for k in _BOOT_KEYS:
        if k in msg:
            boot[k] = msg[k]
    _boot_inputs.clear()
    for k in msg:
        if k != "t" and k not in _BOOT_KEYS:
            _boot_inputs[k] = msg[k]


def take_boot_inputs():
    """The inputs the boot record brought (pins, adc, parts, failed, uart, wifi), handed over
    once: _siminputs applies them, and the record need not stay on the heap after that."""
    global _boot_inputs
    taken, _boot_inputs = _boot_inputs, {}
    return taken


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
    t = port_time
    deadline = t.ticks_add(t.ticks_ms(), 1000)
    while not _reset_acked and sock is not None and t.ticks_diff(deadline, t.ticks_ms()) > 0:
        wait(t.ticks_diff(deadline, t.ticks_ms()))
    pending_exit = EXIT_CODES[cause]
    # A bare `except:` in the firmware may swallow SystemExit, but a chip reset cannot be
    # swallowed: every later shim call polls this object, which raises it again (zero cost
    # to the hot loop until then).
    global poller
    poller = _Exiting()
    raise SystemExit(pending_exit)


class _Exiting:
    def ipoll(self, *a):
        raise SystemExit(pending_exit)

    poll = ipoll
