# esp, the ESP8266/ESP32 low-level module, for what ESP32 firmware commonly calls.
import _simcore

_prof = _simcore.boot["profile"]
LOG_NONE = 0
LOG_ERROR = 1
LOG_WARNING = 2
LOG_INFO = 3
LOG_DEBUG = 4
LOG_VERBOSE = 5


def flash_size():
    return _prof["flash_size"]


def flash_user_start():
    return 0x200000


def osdebug(uart_num, level=LOG_ERROR):
    pass


def gpio_matrix_in(*args):
    pass


def gpio_matrix_out(*args):
    pass
