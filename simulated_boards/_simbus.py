# Buses of the simulated ESP32: I2C/SoftI2C (to simulated parts, see _simparts), SPI/SoftSPI
# and UART (bytes fed by the host). Bytes the firmware writes are reported to the host.
import _simcore
import _simclock
import _siminputs
from _simpins import check_pin

# Builtins the shim calls below use, as module globals. MicroPython looks a builtin up in the
# module's globals table first, and that miss costs more the fuller the table is (it grows
# only when full): without these, adding any global here would slow every shim call that
# uses one. Found here, they cost one cached lookup.
from builtins import bytes, getattr

tick = _simclock.tick
_prof = _simcore.boot["profile"]
ENODEV = 19
ETIMEDOUT = 116


def _pin_id(p):
    if p is None:
        return None
    return check_pin(p)


def _hex(buf):
    return bytes(buf).hex()


class I2C:
    """machine.I2C: transactions go to the part simulated at the address, or fail as the port does."""

    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in _prof["i2c_ids"]:
            raise ValueError("I2C(%s) doesn't exist" % (id,))
        self._id = id
        self.init(scl=scl, sda=sda, freq=freq, timeout=timeout)

    def init(self, *, scl=None, sda=None, freq=400000, timeout=50000):
        _pin_id(scl)
        _pin_id(sda)
        if freq <= 0:
            raise ValueError("freq must be positive")
        self._freq = freq

    def _part(self, addr):
        tick()
        f = _siminputs.failed.get(addr)
        if f is not None:
            raise OSError(ETIMEDOUT if f == "timeout" else ENODEV)
        p = _siminputs.parts.get(addr)
        if p is None:
            raise OSError(ENODEV)
        return p

    def _call(self, p, what, *args):
        try:
            return getattr(p, what)(*args)
        except OSError:
            raise
        except Exception as e:
            raise _simcore.bug("simulated part %s at 0x%02x (%s)" % (p.NAME, p.addr, what), e)

    def scan(self):
        tick()
        failed = _siminputs.failed
        return sorted(a for a in _siminputs.parts if a not in failed)

    def writeto(self, addr, buf, stop=True):
        p = self._part(addr)
        self._call(p, "write", bytes(buf))
        if len(buf):
            _simcore.send({"t": "i2c", "bus": self._id, "addr": addr, "data": _hex(buf)})
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        data = b"".join(bytes(b) for b in vector)
        return self.writeto(addr, data, stop)

    def readfrom(self, addr, nbytes, stop=True):
        p = self._part(addr)
        return bytes(self._call(p, "read", nbytes))

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf), stop)
        buf[:] = data

    def _mem(self, memaddr, addrsize):
        if addrsize not in (8, 16):
            raise ValueError("addrsize must be 8 or 16")
        return memaddr.to_bytes(addrsize // 8, "big")

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        p = self._part(addr)
        self._call(p, "write", self._mem(memaddr, addrsize))
        return bytes(self._call(p, "read", nbytes))

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        buf[:] = self.readfrom_mem(addr, memaddr, len(buf), addrsize=addrsize)

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        p = self._part(addr)
        data = self._mem(memaddr, addrsize) + bytes(buf)
        self._call(p, "write", data)
        _simcore.send({"t": "i2c", "bus": self._id, "addr": addr, "data": _hex(data)})

    # Primitive operations of SoftI2C are not simulated bit by bit.
    def start(self):
        raise OSError(95)  # EOPNOTSUPP: use the transaction methods

    stop = readinto = write = start


class SoftI2C(I2C):
    def __init__(self, scl, sda, *, freq=400000, timeout=50000):
        self._id = -1
        self.init(scl=scl, sda=sda, freq=freq, timeout=timeout)


class SPI:
    """machine.SPI: writes are reported; reads return bytes the host fed (else the write byte)."""
    MSB = 0
    LSB = 1
    CONTROLLER = 0

    def __init__(self, id=1, baudrate=1000000, *, polarity=0, phase=0, bits=8, firstbit=0,
                 sck=None, mosi=None, miso=None):
        if id not in _prof["spi_ids"]:
            raise ValueError("SPI(%s) doesn't exist" % (id,))
        self._id = id
        self.init(baudrate, polarity=polarity, phase=phase, bits=bits, firstbit=firstbit,
                  sck=sck, mosi=mosi, miso=miso)

    def init(self, baudrate=1000000, *, polarity=0, phase=0, bits=8, firstbit=0,
             sck=None, mosi=None, miso=None):
        for p in (sck, mosi, miso):
            _pin_id(p)
        if polarity not in (0, 1) or phase not in (0, 1):
            raise ValueError("polarity and phase must be 0 or 1")
        self._baud = baudrate

    def deinit(self):
        pass

    def _rx(self, n, fill):
        tick()
        q = _siminputs.uart_rx.get(1000 + self._id)  # SPI feeds share the rx store, keyed 1000+id
        out = bytearray(bytes((fill,)) * n)
        if q:
            k = min(n, len(q))
            out[:k] = q[:k]
            q[:k] = b""
        return out

    def write(self, buf):
        tick()
        _simcore.send({"t": "spi", "id": self._id, "data": _hex(buf)})

    def read(self, nbytes, write=0):
        return bytes(self._rx(nbytes, write))

    def readinto(self, buf, write=0):
        buf[:] = self._rx(len(buf), write)

    def write_readinto(self, write_buf, read_buf):
        self.write(write_buf)
        read_buf[:] = self._rx(len(read_buf), 0)


class SoftSPI(SPI):
    def __init__(self, baudrate=500000, *, polarity=0, phase=0, bits=8, firstbit=0,
                 sck=None, mosi=None, miso=None):
        self._id = -1
        self.init(baudrate, polarity=polarity, phase=phase, bits=bits, firstbit=firstbit,
                  sck=sck, mosi=mosi, miso=miso)


class UART:
    """machine.UART: write() is reported to the host; read() returns bytes the host fed."""
    INV_TX = 1
    INV_RX = 2
    RTS = 1
    CTS = 2

    def __init__(self, id, baudrate=115200, **kw):
        if id not in _prof["uart_ids"]:
            raise ValueError("UART(%s) does not exist" % (id,))
        self._id = id
        self._timeout = 0
        self.init(baudrate, **kw)

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, *, tx=None, rx=None,
             timeout=0, timeout_char=0, rxbuf=256, txbuf=256, invert=0, flow=0, rts=None,
             cts=None):
        _pin_id(tx)
        _pin_id(rx)
        if bits not in (5, 6, 7, 8) or stop not in (1, 1.5, 2) or parity not in (None, 0, 1):
            raise ValueError("invalid bits, parity or stop")
        self._baud = baudrate
        self._timeout = timeout

    def deinit(self):
        pass

    def _q(self):
        tick()
        return _siminputs.uart_rx.setdefault(self._id, bytearray())

    def any(self):
        return len(self._q())

    def _wait(self, n):
        # Wait (in board time) up to the timeout for n bytes, as the chip's driver does.
        q = self._q()
        waited = 0
        while len(q) < n and waited < self._timeout:
            _simclock.sleep_us(1000)
            waited += 1
            q = self._q()
        return q

    def read(self, nbytes=None):
        q = self._wait(nbytes or 1)
        if not q:
            return None
        k = len(q) if nbytes is None else min(nbytes, len(q))
        data = bytes(q[:k])
        q[:k] = b""
        return data

    def readinto(self, buf, nbytes=None):
        data = self.read(len(buf) if nbytes is None else nbytes)
        if data is None:
            return None
        buf[:len(data)] = data
        return len(data)

    def readline(self):
        q = self._wait(1)
        if not q:
            return None
        i = q.find(b"\n")
        k = len(q) if i < 0 else i + 1
        data = bytes(q[:k])
        q[:k] = b""
        return data

    def write(self, buf):
        tick()
        _simcore.send({"t": "uart", "id": self._id, "data": _hex(buf)})
        return len(buf)

    def flush(self):
        pass

    def txdone(self):
        return True

    def sendbreak(self):
        pass
