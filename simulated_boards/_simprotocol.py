# What both ends of the simulated ESP32 must agree on, in one place. The board imports this
# file; the host (micropython_hil.sim.protocol) reads it without running it, so it holds
# literals only.

# Exit codes of the board's process after a chip reset: the board layer relaunches after any.
EXIT_CODES = {"hard": 80, "soft": 81, "deepsleep": 82, "brownout": 83, "wdt": 84}

# What an ESP32's ROM prints after each kind of reset; the board layer writes it to the console
# when it relaunches, so tests and logs see a reboot as on the chip.
ROM_RESET_LINES = {
    "hard": "rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    "soft": "soft reboot",
    "deepsleep": "rst:0x5 (DEEPSLEEP_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    "brownout": "rst:0xf (RTCWDT_BROWN_OUT_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    "wdt": "rst:0x7 (TG0WDT_SYS_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
}
