# GPIO-level peripherals of the simulated ESP32 (re-exported by machine): Pin with pulls,
# open drain and IRQs, Signal, ADC and PWM. Inputs come from the host (_siminputs.pins/adc),
# outputs are reported to it.
import _simcore
import _simclock
import _siminputs

# Builtins the shim calls below use, as module globals. MicroPython looks a builtin up in the
# module's globals table first, and that miss costs more the fuller the table is (it grows
# only when full): without these, adding any global here would slow every shim call that
# uses one. Found here, they cost one cached lookup.
from builtins import int, isinstance, max, min

_c = _simclock
tick = _simclock.tick
_pins = _siminputs.pins
_pins_get = _pins.get
_prof = _simcore.boot["profile"]
_PIN_IDS = set(_prof["pins"])
_INPUT_ONLY = set(_prof["input_only"])
_ADC_PINS = {int(k): v for k, v in _prof["adc"].items()}
wake_sources = {}  # set by esp32.wake_on_ext0/ext1 and Pin.irq(wake=...)


def check_pin(pin_id, output=False):
    """The GPIO number of a Pin or number, if the chip has it (and it can drive it when
    output=True); ValueError as the port raises otherwise. The buses and esp32 check with it."""
    if isinstance(pin_id, Pin):
        pin_id = pin_id._id
    if pin_id not in _PIN_IDS:
        raise ValueError("invalid pin")
    if output and pin_id in _INPUT_ONLY:
        raise ValueError("pin can only be input")
    return pin_id


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    _irqs = {}  # pin id -> Pin with a handler

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        self._id = check_pin(id)
        self._mode = Pin.IN
        self._pull = None
        self._out = 0
        self._sent = None  # the level last reported to the host
        self._handler = None
        self._trigger = 0
        self.init(mode, pull, value=value, drive=drive, hold=hold)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        tick()
        if mode not in (-1, None):
            if mode not in (Pin.IN, Pin.OUT, Pin.OPEN_DRAIN):
                raise ValueError("invalid pin mode")
            if mode != Pin.IN:
                check_pin(self._id, output=True)
            self._mode = mode
        if pull != -1:
            if pull not in (None, Pin.PULL_UP, Pin.PULL_DOWN):
                raise ValueError("invalid pull")
            if pull is not None and self._id in _INPUT_ONLY and self._id >= 34:
                pass  # the ESP32's GPIO34-39 have no pulls: accepted, without effect
            self._pull = pull
        if value is not None:
            self._write(1 if value else 0)

    def _level(self):
        if self._mode == Pin.OUT:
            return self._out
        v = _pins.get(self._id)
        if v is not None:
            if isinstance(v, dict):
                v = _simcore.value(v, _c.now_us() / 1e6)
            level = 1 if v else 0
        else:
            level = 1 if self._pull == Pin.PULL_UP else 0
        if self._mode == Pin.OPEN_DRAIN and self._out == 0:
            return 0
        return level

    def _write(self, v):
        old = self._level()
        self._out = v
        if v != self._sent:
            self._sent = v
            _simcore.send({"t": "pin", "id": self._id, "v": v, "c": _c.now_us()})
        if self._handler is not None and self._mode == Pin.OUT:
            _edge(self, old, v)

    def value(self, x=None):
        tick()
        if x is None:
            if self._mode == 1:  # Pin.IN, the hot path: a level the host set
                v = _pins_get(self._id)
                if v is not None and v.__class__ is int:
                    return v
            return self._level()
        self._write(1 if x else 0)

    __call__ = value

    def on(self):
        tick()
        self._write(1)

    def off(self):
        tick()
        self._write(0)

    def irq(self, handler=None, trigger=3, *, priority=1, wake=None, hard=False):
        tick()
        if wake is not None:
            if trigger not in (Pin.WAKE_LOW, Pin.WAKE_HIGH):
                raise ValueError("bad wake value")
            wake_sources["pin%d" % self._id] = (self._id, trigger)
        self._handler = handler
        self._trigger = trigger
        if handler is None:
            Pin._irqs.pop(self._id, None)
        else:
            Pin._irqs[self._id] = self
        return _PinIRQ(self)

    def __repr__(self):
        return "Pin(%d)" % self._id


class _PinIRQ:
    def __init__(self, pin):
        self._pin = pin

    def trigger(self):
        return self._pin._trigger

    def flags(self):
        return self._pin._trigger


def _edge(pin, old, new):
    if old == new or pin._handler is None:
        return
    want = Pin.IRQ_RISING if new else Pin.IRQ_FALLING
    if pin._trigger & want or pin._trigger == (Pin.WAKE_HIGH if new else Pin.WAKE_LOW):
        if _irq_enabled:
            pin._handler(pin)
        else:
            _deferred.append((pin, old, new))


def _on_host_pin(pin_id, old, new):
    pin = Pin._irqs.get(pin_id)
    if pin is None or pin._mode == Pin.OUT:
        return
    t = _c.now_us() / 1e6
    old_l = _simcore.value(old, t) if old is not None else (1 if pin._pull == Pin.PULL_UP else 0)
    _edge(pin, 1 if old_l else 0, 1 if _simcore.value(new, t) else 0)


_siminputs.watch_pins(_on_host_pin)
_irq_enabled = True
_deferred = []


def disable_irq():
    global _irq_enabled
    state = _irq_enabled
    _irq_enabled = False
    _c.hold_timers(True)  # timers wait too
    return state


def enable_irq(state=True):
    global _irq_enabled
    _irq_enabled = state
    if state:
        _c.hold_timers(False)
        while _deferred:
            p, o, n = _deferred.pop(0)
            _edge(p, o, n)


class Signal:
    """machine.Signal: a pin with optional inversion."""

    def __init__(self, pin, *args, invert=False, **kw):
        self._pin = pin if isinstance(pin, Pin) else Pin(pin, *args, **kw)
        self._inv = 1 if invert else 0

    def value(self, x=None):
        if x is None:
            return self._pin.value() ^ self._inv
        self._pin.value((1 if x else 0) ^ self._inv)

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12
    _FULL_SCALE_MV = (950, 1250, 1750, 2450)  # per attenuation, from the ESP32 quickref

    def __init__(self, pin, *, atten=0):
        self._id = check_pin(pin)
        if self._id not in _ADC_PINS:
            raise ValueError("invalid pin")
        self._atten = 0
        self._width = 12
        self.atten(atten)

    def init(self, *, atten=None):
        if atten is not None:
            self.atten(atten)

    def atten(self, atten):
        if atten not in (0, 1, 2, 3):
            raise ValueError("invalid atten")
        self._atten = atten

    def width(self, bits):
        if bits not in _prof["adc_widths"]:
            raise ValueError("invalid width")
        self._width = bits

    def _volts(self):
        tick()
        v = _siminputs.adc.get(self._id, 0.0)
        if isinstance(v, dict):
            v = _simcore.value(v, _c.now_us() / 1e6)
        fs = ADC._FULL_SCALE_MV[self._atten] / 1000
        return min(max(v, 0.0), fs), fs

    def read_uv(self):
        v, _ = self._volts()
        return int(v * 1000000)

    def read_u16(self):
        v, fs = self._volts()
        return int(v / fs * 4095 + 0.5) * 65535 // 4095

    def read(self):
        v, fs = self._volts()
        return int(v / fs * ((1 << self._width) - 1) + 0.5)


class PWM:
    def __init__(self, dest, *, freq=None, duty=None, duty_u16=None, duty_ns=None, invert=False):
        self._id = check_pin(dest, output=True)
        self._freq = 5000
        self._duty = 32768
        self._on = True
        self.init(freq=freq, duty=duty, duty_u16=duty_u16, duty_ns=duty_ns)

    def init(self, *, freq=None, duty=None, duty_u16=None, duty_ns=None):
        if freq is not None:
            self._set_freq(freq)
        if duty is not None:
            self._set_duty(duty * 65535 // 1023)
        if duty_u16 is not None:
            self._set_duty(duty_u16)
        if duty_ns is not None:
            self._set_duty(duty_ns * self._freq * 65535 // 1000000000)
        self._on = True
        self._report()

    def _set_freq(self, f):
        if not 1 <= f <= 40000000:
            raise ValueError("freq must be from 1Hz to 40MHz")
        self._freq = int(f)

    def _set_duty(self, d):
        if not 0 <= d <= 65535:
            raise ValueError("duty_u16 must be from 0 to 65535")
        self._duty = int(d)

    def _report(self):
        tick()
        _simcore.send({"t": "pwm", "id": self._id, "freq": self._freq,
                       "duty_u16": self._duty if self._on else 0})

    def freq(self, f=None):
        if f is None:
            return self._freq
        self._set_freq(f)
        self._report()

    def duty(self, d=None):
        if d is None:
            return self._duty * 1023 // 65535
        self._set_duty(d * 65535 // 1023)
        self._report()

    def duty_u16(self, d=None):
        if d is None:
            return self._duty
        self._set_duty(d)
        self._report()

    def duty_ns(self, ns=None):
        if ns is None:
            return self._duty * 1000000000 // (65535 * self._freq)
        self._set_duty(ns * self._freq * 65535 // 1000000000)
        self._report()

    def deinit(self):
        self._on = False
        self._report()
