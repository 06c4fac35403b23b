# time, as on an ESP32, in the board's clock (see _simclock): sleeps, ticks and the calendar
# all follow the one clock the harness controls. Epoch 2000-01-01 and a ticks period of 2**30,
# as the ESP32 port has, so wrap-around bugs show up here as they would on the chip.
import _simcore
import _simclock

_c = _simclock
_b = _simcore.port_time
_EPOCH_1970 = 946684800
_MASK = (1 << 30) - 1
_HALF = 1 << 29


def sleep(seconds):
    _c.sleep_us(int(seconds * 1000000))


def sleep_ms(ms):
    _c.sleep_us(int(ms) * 1000)


def sleep_us(us):
    _c.sleep_us(int(us))


def ticks_ms():
    return (_c.since_boot_us() // 1000) & _MASK


def ticks_us():
    return _c.since_boot_us() & _MASK


_MHZ = _simcore.boot["profile"]["cpu_freq"] // 1000000


def ticks_cpu():
    # CPU cycles at the profile's clock, masked like every ticks_* (wraps after a few seconds).
    return (_c.since_boot_us() * _MHZ) & _MASK


def ticks_add(ticks, delta):
    return (ticks + delta) & _MASK


def ticks_diff(ticks1, ticks2):
    return ((ticks1 - ticks2 + _HALF) & _MASK) - _HALF


def time():
    return _c.rtc_base + _c.now_us() // 1000000


def time_ns():
    return (_c.rtc_base * 1000000 + _c.now_us()) * 1000


def gmtime(secs=None):
    if secs is None:
        secs = time()
    return _b.gmtime(int(secs) + _EPOCH_1970)[:8]


localtime = gmtime  # the ESP32 port has no time zones: localtime is UTC


def mktime(t):
    y, mo, d, h, mi, s = t[0], t[1], t[2], t[3], t[4], t[5]
    # Days since 2000-01-01 by the civil-from-days algorithm (months may overflow as in C).
    y += (mo - 1) // 12
    mo = (mo - 1) % 12 + 1
    a = (14 - mo) // 12
    yy = y + 4800 - a
    m = mo + 12 * a - 3
    jdn = d + (153 * m + 2) // 5 + 365 * yy + yy // 4 - yy // 100 + yy // 400 - 32045
    return (jdn - 2451545) * 86400 + h * 3600 + mi * 60 + s


# The u-prefixed aliases (utime, uselect, usocket) are set up by _simboot, which the launch
# runs first. At a REPL launched without it, whichever of these shims the firmware imports
# first sets them up here: the port would resolve `import usocket` to its built-in otherwise.
# This import closes a cycle (_simboot imports this module): see _simboot.
import _simboot  # noqa: E402,F401
