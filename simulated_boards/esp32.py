# esp32, as on the chip: NVS (kept in a file under the board's root, committed writes only),
# MCU temperature, wake sources for deep sleep, heap info.
import _simcore
import json
import machine
from _simpins import check_pin

_prof = _simcore.boot["profile"]
NVS_FILE = ".sim_nvs.json"  # in the board's root folder (the process cwd): survives resets
HEAP_DATA = 4
HEAP_EXEC = 1
WAKEUP_ALL_LOW = False
WAKEUP_ANY_HIGH = True
_ERR_NOT_FOUND = -4354  # ESP_ERR_NVS_NOT_FOUND, as the port raises it
_ERR_INVALID_LENGTH = -4364


def _load():
    try:
        with open(NVS_FILE) as f:
            return json.load(f)
    except OSError:
        return {}


class NVS:
    """esp32.NVS: set_*/get_* act at once; only commit() makes them survive a reset."""

    def __init__(self, namespace):
        if not isinstance(namespace, str) or not 0 < len(namespace) <= 15:
            raise ValueError("NVS namespace must be a str of 1..15 characters")
        self._ns = namespace
        self._data = _load().get(namespace, {})

    def _key(self, key):
        if not 0 < len(key) <= 15:
            raise ValueError("NVS key must be 1..15 characters")
        return key

    def _get(self, key, kind):
        v = self._data.get(self._key(key))
        if v is None or v[0] != kind:
            raise OSError(_ERR_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")
        return v[1]

    def set_i32(self, key, value):
        if not -(1 << 31) <= value < (1 << 31):
            raise OverflowError("value out of i32 range")
        self._data[self._key(key)] = ["i32", value]

    def get_i32(self, key):
        return self._get(key, "i32")

    def set_blob(self, key, value):
        self._data[self._key(key)] = ["blob", bytes(value).hex()]

    def get_blob(self, key, buffer):
        data = bytes.fromhex(self._get(key, "blob"))
        if len(buffer) < len(data):
            raise OSError(_ERR_INVALID_LENGTH, "ESP_ERR_NVS_INVALID_LENGTH")
        buffer[:len(data)] = data
        return len(data)

    def erase_key(self, key):
        if self._data.pop(self._key(key), None) is None:
            raise OSError(_ERR_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")

    def commit(self):
        allns = _load()
        allns[self._ns] = self._data
        with open(NVS_FILE, "w") as f:
            json.dump(allns, f)


def mcu_temperature():
    return int(_simcore.boot.get("mcu_temperature", _prof["mcu_temperature"]))


def raw_temperature():
    return int(mcu_temperature() * 9 / 5 + 32)


def wake_on_ext0(pin, level):
    if pin is None:
        machine.wake_sources.pop("ext0", None)
        return
    pid = check_pin(pin)
    machine.wake_sources["ext0"] = (pid, level)


def wake_on_ext1(pins, level):
    if not pins:
        machine.wake_sources.pop("ext1", None)
        return
    machine.wake_sources["ext1"] = ([check_pin(p) for p in pins], level)


def wake_on_touch(wake):
    if wake:
        machine.wake_sources["touch"] = True
    else:
        machine.wake_sources.pop("touch", None)


def wake_on_ulp(wake):
    if wake:
        machine.wake_sources["ulp"] = True
    else:
        machine.wake_sources.pop("ulp", None)


def gpio_deep_sleep_hold(enable):
    pass


def idf_heap_info(capabilities):
    import gc
    free = gc.mem_free()
    total = free + gc.mem_alloc()
    return [(total, free, free, free)]
