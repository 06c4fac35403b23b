# The board's inputs as the host set them (device side): pin levels, ADC volts, the simulated
# I2C parts and which of them fail, bytes fed to UART/SPI, the access point and the WiFi link
# it gives. The boot record brings the ones set before this launch (they survive resets); the
# host's input commands change them while the firmware runs. The shims read them here:
# machine's pins and buses, network's WLAN, socket's and select's view of the link.
#
# It sits above the channel (_simcore) and the clock (_simclock): a signal starts when the
# board receives it, stamped with board time. _simboot imports it before the firmware runs,
# so its handlers are in place before any shim call reads the channel.
import _simcore
import _simclock

pins = {}       # pin id -> level or signal dict (inputs driven by the host)
adc = {}        # pin id -> volts or signal dict
parts = {}      # i2c address -> part object
failed = {}     # i2c address -> "nack" or "timeout" while the part stops answering
uart_rx = {}    # uart id (SPI: 1000 + id) -> bytearray of bytes the host fed
# The access point. A drop makes it unavailable from dropped_at until refuse_until (board us;
# FOREVER until the host restores it); the host keeps both, so an outage outlasts a reset.
wifi = {"networks": None, "connect_s": 0.2, "dropped_at": None, "refuse_until": 0, "scan": []}
FOREVER = 1 << 60
# How many times the WiFi link went down in this launch. A connection made before the latest
# cut is lost: lwIP aborts it when the station loses its IP (socket reads it per call, select
# to wake its waiters).
cuts = 0
_pin_watcher = None  # called with (pin id, old, new) when the host changes a pin (machine's IRQs)
_station = None      # network's check that the firmware's station has an IP, once it connected
_lost = None         # socket's check that an object is a connection a cut has killed


def watch_pins(fn):
    """Have fn(pin_id, old, new) called each time the host drives a pin (old: None if unset)."""
    global _pin_watcher
    _pin_watcher = fn


def watch_station(fn):
    """network: fn() tells whether the firmware's station has an IP (the link), from the first
    WLAN.connect() on."""
    global _station
    _station = fn


def watch_connections(fn):
    """socket: fn(obj) tells whether obj is a connection the link's loss has killed."""
    global _lost
    _lost = fn


def cut():
    """The WiFi link went down: every connection open now is lost."""
    global cuts
    cuts += 1


def lost(obj):
    """Whether obj (anything a firmware polls) is a connection the link's loss has killed."""
    return _lost is not None and _lost(obj)


def link_up():
    """Whether the board has a WiFi link now: sockets connect and names resolve only then.
    A firmware that called WLAN.connect() has it while its station has an IP. One that never
    did counts as connected before it ran (by its boot.py, say), and loses the link only to a
    drop: from the drop until connect_s after the access point is back, as the station."""
    if _station is not None:
        return _station()
    d = wifi["dropped_at"]
    if d is None:
        return True
    now = _simclock.now_us()
    return not d <= now < wifi["refuse_until"] + int(wifi["connect_s"] * 1000000)


def _t0(v, c):
    if isinstance(v, dict) and "t0" not in v:
        v["t0"] = c
    return v


def _stamp(v):
    # Signals start when the board receives them: record that board time (seconds) as t0.
    if isinstance(v, dict) and "t0" not in v:
        v["t0"] = _simclock.now_us() / 1e6
    return v


def _set_part(addr, name, values, trim=None):
    # Imported on first use: a firmware whose test attaches no part never pays its heap.
    import _simparts
    for k in values:
        values[k] = _stamp(values[k])
    p = parts.get(addr)
    if p is None or p.NAME != name:
        p = _simparts.create(name, addr)
        parts[addr] = p
    if trim:
        p.configure(trim)
    p.set(values)


def _apply_boot(record):
    wifi.update(record.get("wifi", {}))
    d = wifi["dropped_at"]
    if d is not None and d > _simcore.boot["clock"]:
        # A launch that does not continue the board's time line (a bare relaunch starts at its
        # old clock): a drop in its "future" would replay. One until restored is still on.
        wifi["dropped_at"] = _simcore.boot["clock"] if wifi["refuse_until"] == FOREVER else None
    # Signals set before this boot start at its first instant.
    c = _simcore.boot["clock"] / 1e6
    for k, v in record.get("pins", {}).items():
        pins[int(k)] = _t0(v, c)
    for k, v in record.get("adc", {}).items():
        adc[int(k)] = _t0(v, c)
    for a, spec in record.get("parts", {}).items():
        for k in spec["values"]:
            _t0(spec["values"][k], c)
        _set_part(int(a), spec["name"], spec["values"], spec.get("trim"))
    for a, mode in record.get("failed", {}).items():
        failed[int(a)] = mode
    for k, v in record.get("uart", {}).items():
        uart_rx[int(k)] = bytearray(bytes.fromhex(v))


def _on_input(msg):
    # One handler for every input command: one function takes less of the heap the firmware
    # shares than one per command.
    t = msg["t"]
    if t == "pin":
        old = pins.get(msg["id"])
        pins[msg["id"]] = _stamp(msg["v"])
        if _pin_watcher is not None:
            _pin_watcher(msg["id"], old, msg["v"])
    elif t == "adc":
        adc[msg["id"]] = _stamp(msg["v"])
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
        if _station is not None and not _station():
            cut()  # the station's access point went away (or now wants another password)
    elif t == "wifi_drop" or t == "wifi_restore":
        now = _simclock.now_us()
        if t == "wifi_drop":
            s = msg["refuse_s"]
            wifi["dropped_at"] = now
            wifi["refuse_until"] = FOREVER if s is None else now + int(s * 1000000)
            cut()
        elif wifi["dropped_at"] is not None and wifi["refuse_until"] > now:
            wifi["refuse_until"] = now
        # Told back in board time, which only the board knows: later launches get it.
        _simcore.send({"t": "wifi_outage", "n": msg["n"], "dropped_at": wifi["dropped_at"],
                       "refuse_until": wifi["refuse_until"]})
    elif t == "brownout":
        # A power dip resets the chip at once; the host drops the RTC memory for the next boot.
        _simcore.reset_now("brownout", _simclock.now_us(), _simclock.rtc_base)


_apply_boot(_simcore.take_boot_inputs())
for _t in ("pin", "adc", "part", "i2cfail", "uart", "wifi", "wifi_drop", "wifi_restore",
           "brownout"):
    _simcore.handlers[_t] = _on_input
del _t
_simcore.drain()  # what the host sent right behind the boot record, now that all handlers are in
