# Bosch BME280 (temperature, pressure, humidity), register map per the Bosch datasheet
# (BST-BME280-DS002). The raw ADC values are found by inverting the datasheet's integer
# compensation formulas (binary search: each formula is monotonic in its raw input), so any
# driver that implements the datasheet reads back the values the test set.
# Trimming (each real chip has its own): by default the T and P words of Bosch's worked
# example (BMP280 datasheet 3.12, the same formulas) and typical humidity words; a test may
# give a chip other words with sim.sensor("bme280").trim(dig_T2=..., ...).
NAME = "bme280"
ADDRESSES = (0x76, 0x77)
RANGES = {"temperature": (-40.0, 85.0), "pressure": (300.0, 1100.0), "humidity": (0.0, 100.0)}
UNITS = {"temperature": "degC", "pressure": "hPa", "humidity": "%RH"}
# name: (default, min, max) -- the field widths of the datasheet's table 16.
TRIM = {"dig_T1": (27504, 0, 65535), "dig_T2": (26435, -32768, 32767),
        "dig_T3": (-1000, -32768, 32767), "dig_P1": (36477, 0, 65535),
        "dig_P2": (-10685, -32768, 32767), "dig_P3": (3024, -32768, 32767),
        "dig_P4": (2855, -32768, 32767), "dig_P5": (140, -32768, 32767),
        "dig_P6": (-7, -32768, 32767), "dig_P7": (15500, -32768, 32767),
        "dig_P8": (-14600, -32768, 32767), "dig_P9": (6000, -32768, 32767),
        "dig_H1": (75, 0, 255), "dig_H2": (362, -32768, 32767), "dig_H3": (0, 0, 255),
        "dig_H4": (313, -2048, 2047), "dig_H5": (50, -2048, 2047), "dig_H6": (30, -128, 127)}
CHIP_ID = 0x60


def t_fine_of(adc_t, t1, t2, t3):
    var1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11
    var2 = (((((adc_t >> 4) - t1) * ((adc_t >> 4) - t1)) >> 12) * t3) >> 14
    return var1 + var2


def _cdiv(a, b):
    # C integer division truncates toward zero.
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def pressure_q24_8(adc_p, t_fine, p):
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = p
    var1 = t_fine - 128000
    var2 = var1 * var1 * p6
    var2 = var2 + ((var1 * p5) << 17)
    var2 = var2 + (p4 << 35)
    var1 = ((var1 * var1 * p3) >> 8) + ((var1 * p2) << 12)
    var1 = (((1 << 47) + var1) * p1) >> 33
    if var1 == 0:
        return 0
    pr = 1048576 - adc_p
    pr = _cdiv(((pr << 31) - var2) * 3125, var1)
    var1 = (p9 * (pr >> 13) * (pr >> 13)) >> 25
    var2 = (p8 * pr) >> 19
    return ((pr + var1 + var2) >> 8) + (p7 << 4)


def humidity_q22_10(adc_h, t_fine, h):
    h1, h2, h3, h4, h5, h6 = h
    v = t_fine - 76800
    v = ((((adc_h << 14) - (h4 << 20) - (h5 * v)) + 16384) >> 15) * (
        ((((((v * h6) >> 10) * (((v * h3) >> 11) + 32768)) >> 10) + 2097152) * h2 + 8192) >> 14)
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4)
    v = max(0, min(v, 419430400))
    return v >> 12


def _search(f, target, lo, hi, increasing=True):
    # Smallest raw value whose compensated output reaches target (or largest, if decreasing).
    while lo < hi:
        mid = (lo + hi) // 2
        reached = f(mid) >= target if increasing else f(mid) <= target
        if reached:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _middle(f, target, hi, increasing=True):
    # The middle of the raw values that compensate to target (its resolution bucket), so that
    # drivers using the float formulas land on target too.
    step = 1 if increasing else -1
    a = _search(f, target, 0, hi, increasing)
    b = _search(f, target + step, 0, hi, increasing)
    return (a + b) // 2 if increasing else (a + b + 1) // 2


def raw_for(temperature, pressure_hpa, humidity, cal):
    """Raw (adc_T, adc_P, adc_H) that the datasheet formulas turn into the given values."""
    t1, t2, t3 = cal[0], cal[1], cal[2]
    cal_p, cal_h = cal[3:12], cal[12:18]
    t_target = int(round(temperature * 100))
    adc_t = _middle(lambda a: (t_fine_of(a, t1, t2, t3) * 5 + 128) >> 8, t_target, 0xFFFFF)
    t_fine = t_fine_of(adc_t, t1, t2, t3)
    p_target = int(round(pressure_hpa * 100 * 256))
    # Pressure falls as adc_P rises; Q24.8 steps are finer than one raw count.
    adc_p = _search(lambda a: pressure_q24_8(a, t_fine, cal_p), p_target, 0, 0xFFFFF, False)
    if abs(pressure_q24_8(adc_p - 1, t_fine, cal_p) - p_target) < \
            abs(pressure_q24_8(adc_p, t_fine, cal_p) - p_target):
        adc_p -= 1
    h_target = int(round(humidity * 1024))
    adc_h = _middle(lambda a: humidity_q22_10(a, t_fine, cal_h), h_target, 0xFFFF)
    return adc_t, adc_p, adc_h


class Part(RegisterPart):  # noqa: F821  (RegisterPart is provided by the loader)
    NAME = NAME
    RANGES = RANGES
    DEFAULTS = {"temperature": 20.0, "pressure": 1013.25, "humidity": 50.0}
    trim = None

    def configure(self, words):
        """Give this chip other trimming words (dig_T1..dig_H6), as the host's trim() sends."""
        for k, v in words.items():
            lo, hi = TRIM[k][1], TRIM[k][2]
            if not lo <= v <= hi:
                raise ValueError("bme280 %s=%r is outside %d..%d" % (k, v, lo, hi))
        self.trim.update(words)
        self.reset()

    def cal(self):
        t = self.trim
        return [t[k] for k in ("dig_T1", "dig_T2", "dig_T3", "dig_P1", "dig_P2", "dig_P3",
                               "dig_P4", "dig_P5", "dig_P6", "dig_P7", "dig_P8", "dig_P9",
                               "dig_H1", "dig_H2", "dig_H3", "dig_H4", "dig_H5", "dig_H6")]

    def reset(self):
        if self.trim is None:
            self.trim = {k: v[0] for k, v in TRIM.items()}
        cal = self.cal()
        r = self.regs
        r[:] = bytes(256)
        r[0xD0] = CHIP_ID
        calib = bytearray()
        for w in cal[:12]:
            calib += (w & 0xFFFF).to_bytes(2, "little")
        r[0x88:0x88 + len(calib)] = calib
        h1, h2, h3, h4, h5, h6 = cal[12:18]
        r[0xA1] = h1
        r[0xE1:0xE3] = (h2 & 0xFFFF).to_bytes(2, "little")
        r[0xE3] = h3
        r[0xE4] = (h4 >> 4) & 0xFF
        r[0xE5] = ((h5 & 0x0F) << 4) | (h4 & 0x0F)
        r[0xE6] = (h5 >> 4) & 0xFF
        r[0xE7] = h6 & 0xFF
        # Data registers at reset: the "skipped" pattern 0x80000 / 0x8000.
        r[0xF7:0xFF] = b"\x80\x00\x00\x80\x00\x00\x80\x00"
        self.hum_pending = 0
        self.status_reads = 0
        self.busy_until = 0

    def write_reg(self, reg, value):
        if reg == 0xE0:
            if value == 0xB6:
                self.reset()
            return
        if reg == 0xF2:
            self.hum_pending = value & 0x07  # takes effect at the next ctrl_meas write
            self.regs[0xF2] = value & 0x07
            return
        if reg in (0xF4, 0xF5):
            self.regs[reg] = value
            if reg == 0xF4 and value & 0x03 in (1, 2):
                self._measure()
                self.regs[0xF4] = value & 0xFC  # forced: back to sleep when done
            return
        # Other registers are read-only on the chip.

    def _measure(self):
        r = self.regs
        ctrl = r[0xF4]
        osrs_t, osrs_p, osrs_h = (ctrl >> 5) & 7, (ctrl >> 2) & 7, self.hum_pending
        adc_t, adc_p, adc_h = raw_for(self.value("temperature"), self.value("pressure"),
                                      self.value("humidity"), self.cal())
        if not osrs_t:
            adc_t = 0x80000
        if not osrs_p:
            adc_p = 0x80000
        if not osrs_h:
            adc_h = 0x8000
        r[0xF7] = adc_p >> 12
        r[0xF8] = (adc_p >> 4) & 0xFF
        r[0xF9] = (adc_p & 0x0F) << 4
        r[0xFA] = adc_t >> 12
        r[0xFB] = (adc_t >> 4) & 0xFF
        r[0xFC] = (adc_t & 0x0F) << 4
        r[0xFD] = adc_h >> 8
        r[0xFE] = adc_h & 0xFF
        # Datasheet 9.1: typical measurement time in ms.
        osr = (0, 1, 2, 4, 8, 16, 16, 16)
        ms = 1.0 + 2.0 * osr[osrs_t] + (2.0 * osr[osrs_p] + 0.5 if osrs_p else 0) + (
            2.0 * osr[osrs_h] + 0.5 if osrs_h else 0)
        import _simclock
        self.busy_until = _simclock.now_us() + int(ms * 1000)
        self.status_reads = 0

    def before_read(self, reg, n):
        if reg <= 0xF3 < reg + n:
            import _simclock
            self.status_reads += 1
            # Measuring (bit 3) until the measurement time has passed in board time; cleared
            # after two polls anyway, so a driver spinning on it cannot hang a stepped clock.
            busy = _simclock.now_us() < self.busy_until and self.status_reads < 3
            self.regs[0xF3] = 0x08 if busy else 0x00
        if reg <= 0xF7 + 7 and reg + n > 0xF7 and self.regs[0xF4] & 0x03 == 0x03:
            self._measure()  # normal mode: a fresh measurement is always ready
