# Minimal reference firmware: announces itself, then prints a heartbeat with its uptime.
# Runs unchanged on an ESP32 and on the unix port; the full firmware lives beside it.
import sys
import time

try:
    import config
    INTERVAL_MS = config.INTERVAL_MS
except ImportError:
    INTERVAL_MS = 100

print("heartbeat firmware on", sys.platform, "interval", INTERVAL_MS, "ms")
start = time.ticks_ms()
beat = 0
while True:
    beat += 1
    print("beat", beat, "uptime_ms", time.ticks_diff(time.ticks_ms(), start))
    time.sleep_ms(INTERVAL_MS)
