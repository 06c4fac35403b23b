# Sensirion SHT3x (SHT30/31/35) humidity and temperature sensor, per its datasheet:
# 16-bit commands, results as [T msb, T lsb, CRC, RH msb, RH lsb, CRC] with CRC-8 (poly 0x31,
# init 0xFF); T = -45 + 175 * S_T / 65535, RH = 100 * S_RH / 65535. A read before the
# measurement is done (or with none pending) is NACKed, as the chip does without clock
# stretching: the driver sees OSError(ENODEV).
NAME = "sht3x"
ADDRESSES = (0x44, 0x45)
RANGES = {"temperature": (-40.0, 125.0), "humidity": (0.0, 100.0)}
UNITS = {"temperature": "degC", "humidity": "%RH"}

# Single-shot commands -> measurement time (ms) by repeatability (high, medium, low).
_SINGLE = {0x2400: 15.5, 0x240B: 6.5, 0x2416: 4.5, 0x2C06: 15.5, 0x2C0D: 6.5, 0x2C10: 4.5}
_PERIODIC_MSB = (0x20, 0x21, 0x22, 0x23, 0x27)
_FETCH = 0xE000
_SOFT_RESET = 0x30A2
_READ_STATUS = 0xF32D
_CLEAR_STATUS = 0x3041
_HEATER_ON = 0x306D
_HEATER_OFF = 0x3066
_BREAK = 0x3093
_ART = 0x2B32


def crc8(data):
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _word(v):
    b = bytes(((v >> 8) & 0xFF, v & 0xFF))
    return b + bytes((crc8(b),))


class Part(Part):  # noqa: F821  (the base Part is provided by the loader)
    NAME = NAME
    RANGES = RANGES
    DEFAULTS = {"temperature": 20.0, "humidity": 50.0}

    def __init__(self, addr):
        super().__init__(addr)
        self.out = None        # bytes the next read returns
        self.ready_at = 0      # board time (us) when they are ready
        self.periodic = False
        self.heater = False

    def _now(self):
        import _simclock
        return _simclock.now_us()

    def _sample(self):
        t = self.value("temperature")
        rh = self.value("humidity")
        st = int(round((t + 45) * 65535 / 175))
        srh = int(round(rh * 65535 / 100))
        return _word(max(0, min(st, 65535))) + _word(max(0, min(srh, 65535)))

    def write(self, data):
        if len(data) < 2:
            raise OSError(19)  # a lone byte is not a command: NACK
        cmd = (data[0] << 8) | data[1]
        if cmd in _SINGLE:
            self.out = self._sample()
            self.ready_at = self._now() + int(_SINGLE[cmd] * 1000)
        elif data[0] in _PERIODIC_MSB or cmd == _ART:
            self.periodic = True
        elif cmd == _FETCH:
            if self.periodic:
                self.out = self._sample()
                self.ready_at = 0
        elif cmd in (_SOFT_RESET, _BREAK):
            self.periodic = False
            self.out = None
            if cmd == _SOFT_RESET:
                self.heater = False
        elif cmd == _READ_STATUS:
            self.out = _word(0x2000 if self.heater else 0)
            self.ready_at = 0
        elif cmd == _CLEAR_STATUS:
            pass
        elif cmd in (_HEATER_ON, _HEATER_OFF):
            self.heater = cmd == _HEATER_ON
        else:
            raise OSError(19)  # unknown command: the chip NACKs it

    def read(self, n):
        if self.out is None or self._now() < self.ready_at:
            raise OSError(19)
        out, self.out = self.out, None
        return (out + bytes(n))[:n]
