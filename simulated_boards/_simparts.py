# Simulated I2C parts: the registry and the base class.
#
# A part is a file <name>.py in a parts folder: simulated_boards/devices/ first, then each
# folder in MPSIM_PARTS (Simulator(parts_dirs=[...])). Files are loaded by path, never through
# sys.path, so a firmware's own module named like a part is never shadowed. A part file
# defines one class `Part`, usually a subclass of RegisterPart (or Part, for command-driven
# parts), plus three literals the host also reads (without running the file):
#   NAME = "bme280"                          ADDRESSES = (0x76, 0x77)
#   RANGES = {"temperature": (-40.0, 85.0), ...}   the values a test may set, in their units
# The host rejects unknown parts, foreign addresses and out-of-range values before they reach
# the board; the device checks again, so a board run without a host fails just as clearly.
# _siminputs creates the parts the host attaches (on first use, so a run without parts never
# loads this module); parts read board time from _simclock.
import _simcore
import _simclock

_os = _simcore.port_os
_classes = {}


def dirs():
    extra = _os.getenv("MPSIM_PARTS") or ""
    return [_simcore.ROOT + "/devices"] + [d for d in extra.split(":") if d]


def load(name):
    """The Part class of part `name`, loaded from the first parts folder that has it."""
    cls = _classes.get(name)
    if cls is not None:
        return cls
    for d in dirs():
        path = d + "/" + name + ".py"
        try:
            with open(path) as f:
                src = f.read()
        except OSError:
            continue
        ns = {"__name__": "_simpart_" + name, "RegisterPart": RegisterPart, "Part": Part,
              "_simcore": _simcore}
        try:
            exec(compile(src, path, "exec"), ns)
        except Exception as e:
            raise _simcore.bug("part file " + path, e)
        cls = ns["Part"]
        # The file's literals are the part's identity (the host reads the same ones).
        cls.NAME = ns.get("NAME", name)
        cls.RANGES = ns.get("RANGES", {})
        _classes[name] = cls
        return cls
    raise ValueError("unknown simulated part %r (looked in %s)" % (name, ", ".join(dirs())))


def create(name, addr):
    return load(name)(addr)


class Part:
    """An I2C part: write(data) receives a write transaction, read(n) answers a read one."""
    NAME = "?"
    RANGES = {}
    DEFAULTS = {}

    def __init__(self, addr):
        self.addr = addr
        self.values = dict(self.DEFAULTS)

    def set(self, values):
        for k, v in values.items():
            lim = self.RANGES.get(k)
            if lim is None:
                raise ValueError("%s has no value %r (it has %s)" % (
                    self.NAME, k, ", ".join(sorted(self.RANGES))))
            if not isinstance(v, dict) and not lim[0] <= v <= lim[1]:
                raise ValueError("%s %s=%r is outside the part's range %r..%r" % (
                    self.NAME, k, v, lim[0], lim[1]))
            self.values[k] = v

    def configure(self, trim):
        """Per-chip settings (e.g. trimming words), from the host's PartHandle.trim()."""
        raise ValueError("%s has no trimming to set" % self.NAME)

    def value(self, name):
        """Current value of `name`, evaluating a signal at the board's time."""
        v = self.values[name]
        if isinstance(v, dict):
            lo, hi = self.RANGES[name]
            v = min(max(_simcore.value(v, _simclock.now_us() / 1e6), lo), hi)
        return v

    def write(self, data):
        pass

    def read(self, n):
        return bytes(n)


class RegisterPart(Part):
    """A part with an 8-bit register pointer that auto-increments (BME280, ADS1115, ...)."""

    def __init__(self, addr):
        super().__init__(addr)
        self.ptr = 0
        self.regs = bytearray(256)
        self.reset()

    def reset(self):
        pass

    def write(self, data):
        if not data:
            return
        self.ptr = data[0]
        for b in data[1:]:
            self.write_reg(self.ptr, b)
            self.ptr = (self.ptr + 1) & 0xFF

    def read(self, n):
        p = self.ptr
        self.before_read(p, n)
        if p + n <= 256:
            out = self.regs[p:p + n]
        else:  # the pointer wraps past 0xFF
            out = self.regs[p:] + self.regs[:p + n - 256]
        self.ptr = (p + n) & 0xFF
        return out

    def write_reg(self, reg, value):
        self.regs[reg] = value

    def before_read(self, reg, n):
        pass
