# Bosch BME280 driver (I2C), written for this firmware from the datasheet (BST-BME280-DS002,
# section 4.2.3 compensation formulas, integer versions). Forced mode: one measurement per read().
import time
from micropython import const

_CHIP_ID = const(0x60)
_REG_ID = const(0xD0)
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_CONFIG = const(0xF5)
_REG_DATA = const(0xF7)


class BME280:
    def __init__(self, i2c, address=0x76):
        self.i2c = i2c
        self.address = address
        chip = self.i2c.readfrom_mem(address, _REG_ID, 1)[0]
        if chip != _CHIP_ID:
            raise OSError("BME280 not found at 0x%02x (chip id 0x%02x)" % (address, chip))
        self._load_calibration()
        self.i2c.writeto_mem(address, _REG_CTRL_HUM, b"\x01")  # humidity oversampling x1
        self.i2c.writeto_mem(address, _REG_CONFIG, b"\x00")

    def _load_calibration(self):
        c = self.i2c.readfrom_mem(self.address, 0x88, 26)
        h = self.i2c.readfrom_mem(self.address, 0xE1, 7)

        def u16(b, i):
            return b[i] | (b[i + 1] << 8)

        def s16(b, i):
            v = u16(b, i)
            return v - 65536 if v > 32767 else v

        self.T1, self.T2, self.T3 = u16(c, 0), s16(c, 2), s16(c, 4)
        self.P = [u16(c, 6)] + [s16(c, 8 + 2 * i) for i in range(8)]
        self.H1 = c[25]
        self.H2 = s16(h, 0)
        self.H3 = h[2]
        e4, e5, e6 = h[3], h[4], h[5]
        self.H4 = (e4 << 4) | (e5 & 0x0F)
        if self.H4 > 2047:
            self.H4 -= 4096
        self.H5 = (e6 << 4) | (e5 >> 4)
        if self.H5 > 2047:
            self.H5 -= 4096
        self.H6 = h[6] - 256 if h[6] > 127 else h[6]

    def _raw(self):
        # Forced mode, temperature and pressure oversampling x1.
        self.i2c.writeto_mem(self.address, _REG_CTRL_MEAS, b"\x25")
        for _ in range(50):
            if not self.i2c.readfrom_mem(self.address, _REG_STATUS, 1)[0] & 0x08:
                break
            time.sleep_ms(2)
        d = self.i2c.readfrom_mem(self.address, _REG_DATA, 8)
        adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        return adc_t, adc_p, adc_h

    def read(self):
        """(temperature degC, pressure hPa, humidity %RH)."""
        adc_t, adc_p, adc_h = self._raw()
        var1 = (((adc_t >> 3) - (self.T1 << 1)) * self.T2) >> 11
        var2 = (((((adc_t >> 4) - self.T1) * ((adc_t >> 4) - self.T1)) >> 12) * self.T3) >> 14
        t_fine = var1 + var2
        temperature = ((t_fine * 5 + 128) >> 8) / 100

        P1, P2, P3, P4, P5, P6, P7, P8, P9 = self.P
        v1 = t_fine - 128000
        v2 = v1 * v1 * P6
        v2 = v2 + ((v1 * P5) << 17)
        v2 = v2 + (P4 << 35)
        v1 = ((v1 * v1 * P3) >> 8) + ((v1 * P2) << 12)
        v1 = (((1 << 47) + v1) * P1) >> 33
        if v1 == 0:
            pressure = 0.0
        else:
            p = 1048576 - adc_p
            p = (((p << 31) - v2) * 3125) // v1
            v1 = (P9 * (p >> 13) * (p >> 13)) >> 25
            v2 = (P8 * p) >> 19
            p = ((p + v1 + v2) >> 8) + (P7 << 4)
            pressure = p / 256 / 100

        h = t_fine - 76800
        h = (((((adc_h << 14) - (self.H4 << 20) - (self.H5 * h)) + 16384) >> 15) *
             (((((((h * self.H6) >> 10) * (((h * self.H3) >> 11) + 32768)) >> 10) + 2097152) *
               self.H2 + 8192) >> 14))
        h = h - (((((h >> 15) * (h >> 15)) >> 7) * self.H1) >> 4)
        h = 0 if h < 0 else h
        h = 419430400 if h > 419430400 else h
        humidity = (h >> 12) / 1024
        return temperature, pressure, humidity
