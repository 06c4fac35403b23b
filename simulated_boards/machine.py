# machine, as on an ESP32 (MicroPython's esp32 port), on the unix port: timers, RTC, watchdog,
# resets and sleeps here; pins, ADC and PWM in _simpins; buses (I2C, SPI, UART) in _simbus.
# Inputs come from the host over the control channel (_simcore); outputs go back to it.
import sys
import _simboot  # noqa: F401  (a REPL may import machine first: u-aliases, host inputs)
import _simcore
import _simclock
from _simbus import I2C, SoftI2C, SPI, SoftSPI, UART  # noqa: F401  (re-exported API)
from _simpins import (ADC, PWM, Pin, Signal, disable_irq,  # noqa: F401
                      enable_irq, wake_sources)

sys.modules["umachine"] = sys.modules["machine"]  # `import umachine` would reach the built-in
_c = _simclock
tick = _simclock.tick
_prof = _simcore.boot["profile"]

# Reset causes and wake reasons: the esp32 port's values.
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
SLEEP = 2
DEEPSLEEP = 4
PIN_WAKE = 2
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
TOUCHPAD_WAKE = 5
ULP_WAKE = 6


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id, **kw):
        if id not in range(_prof["timers"]):
            raise ValueError("invalid Timer number")
        self._id = id
        self._entry = None
        if kw:
            self.init(**kw)

    def init(self, *, mode=PERIODIC, period=-1, freq=-1, callback=None):
        self.deinit()
        if freq > 0:
            period_us = int(1000000 / freq)
        elif period >= 0:
            period_us = int(period) * 1000
        else:
            raise ValueError("Timer needs period= (ms) or freq=")
        if callback is None:
            return
        self._period_us = max(period_us, 1)
        cb = callback
        self._entry = _c.add_timer(_c.now_us() + self._period_us, lambda: cb(self),
                                   self._period_us if mode == Timer.PERIODIC else 0)

    def deinit(self):
        if self._entry is not None:
            _c.cancel(self._entry)
            self._entry = None

    def value(self):
        if self._entry is None:
            return 0
        return max(0, (self._entry[0] - _c.now_us()) // 1000)


class RTC:
    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        import time
        tick()
        if dt is None:
            y, mo, d, h, mi, s, wd, _ = time.gmtime()
            return (y, mo, d, wd, h, mi, s, _c.now_us() % 1000000)
        secs = time.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], 0, 0))
        _c.rtc_base = secs - _c.now_us() // 1000000

    def init(self, dt):
        self.datetime(dt)

    def memory(self, data=None):
        if data is None:
            return bytes(_simcore.rtc_memory)
        if len(data) > 2048:
            raise ValueError("buffer too long")
        _simcore.rtc_memory[:] = data


class WDT:
    def __init__(self, id=0, timeout=5000):
        if timeout < 1:
            raise ValueError("WDT timeout too short")
        self._timeout_us = timeout * 1000
        self._entry = None
        self.feed()

    def feed(self):
        if self._entry is not None:
            _c.cancel(self._entry)
        self._entry = _c.add_timer(_c.now_us() + self._timeout_us, lambda: _reset("wdt"))


def _reset(cause, **extra):
    _simcore.reset_now(cause, _c.now_us(), _c.rtc_base, **extra)


def reset():
    _reset("hard")


def soft_reset():
    _reset("soft")


def reset_cause():
    return _simcore.boot["cause"]


def wake_reason():
    return _simcore.boot["wake"]


def unique_id():
    return bytes.fromhex(_prof["mac"])


_freq = [_prof["cpu_freq"]]


def freq(hz=None):
    if hz is None:
        return _freq[0]
    if hz // 1000000 not in _prof["cpu_freqs_mhz"]:
        raise ValueError("frequency must be one of %s MHz" % _prof["cpu_freqs_mhz"])
    _freq[0] = hz


def idle():
    # On the chip idle() waits for the next interrupt; here: one millisecond of board time.
    _c.sleep_us(1000)


def lightsleep(time_ms=None):
    if time_ms is None:
        if not wake_sources:
            raise ValueError("lightsleep() without time and without a wake source never wakes")
        time_ms = 1 << 40
    _c.sleep_us(int(time_ms) * 1000)


def deepsleep(time_ms=None):
    if time_ms is None and not wake_sources:
        raise ValueError("deepsleep() without time and without a wake source: the chip would "
                         "never wake; pass a time in ms or set esp32.wake_on_ext0()")
    _reset("deepsleep", sleep_ms=time_ms, wake_sources=[k for k in wake_sources])


def time_pulse_us(pin, pulse_level, timeout_us=1000000):
    start = _c.now_us()
    while pin.value() != pulse_level:
        if _c.now_us() - start > timeout_us:
            return -2
        _c.sleep_us(10)
    begin = _c.now_us()
    while pin.value() == pulse_level:
        if _c.now_us() - begin > timeout_us:
            return -1
        _c.sleep_us(10)
    return _c.now_us() - begin
