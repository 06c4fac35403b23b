# Weather station application. One reading every `interval_s` (changeable by a retained command),
# published as JSON with a sequence number; readings taken while the link is down wait in a
# bounded queue and go out in order once it is back (the oldest dropped and counted when full).
import json
import time

import machine
from machine import ADC, I2C, Pin

import settings
from bme280 import BME280
from link import Link

DEFAULTS = {
    "client_id": "weather-1",
    "interval_s": 60,        # seconds between readings
    "queue_max": 32,         # readings kept while offline
    "deep_sleep": False,     # sleep between readings instead of idling
    "i2c_scl": 22, "i2c_sda": 21, "bme280_address": 0x76,
    "battery_pin": 34, "battery_divider": 2.0,
    "wdt_ms": 30000,
}
MIN_INTERVAL_S, MAX_INTERVAL_S = 1, 86400


class Station:
    def __init__(self, cfg):
        x = cfg["extra"]
        prefix = cfg["topic_prefix"]
        self.topic_telemetry = prefix + "/telemetry"
        self.topic_status = prefix + "/status"
        self.topic_cmd = prefix + "/cmd"
        self.interval_s = x["interval_s"]
        self.queue = []
        self.queue_max = x["queue_max"]
        self.dropped = 0
        self.seq = _restore_seq()
        self.sensor = BME280(I2C(0, scl=Pin(x["i2c_scl"]), sda=Pin(x["i2c_sda"])), x["bme280_address"])
        self.battery = ADC(Pin(x["battery_pin"]))
        self.battery.atten(ADC.ATTN_11DB)
        self.battery_divider = x["battery_divider"]
        self.link = Link(cfg, self.topic_status, [self.topic_cmd], self.on_command)
        self.next_reading = time.ticks_ms()

    def on_command(self, topic, msg):
        try:
            cmd = json.loads(msg)
            interval = cmd["interval_s"]
            # A bool is an int to Python: {"interval_s": true} is refused, not taken as 1 s.
            if not isinstance(interval, int) or isinstance(interval, bool) or \
                    not MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S:
                raise ValueError("interval_s out of range")
        except (ValueError, KeyError, TypeError) as e:
            print("cmd rejected:", repr(msg)[:60], e)
            return
        if interval != self.interval_s:
            print("interval now", interval, "s")
            self.interval_s = interval
            self.next_reading = time.ticks_add(time.ticks_ms(), interval * 1000)

    def take_reading(self):
        t, p, h = self.sensor.read()  # OSError if the sensor does not answer: no reading, no seq
        self.seq += 1
        reading = {
            "seq": self.seq,
            "ts": time.time(),
            "temperature_c": round(t, 2),
            "pressure_hpa": round(p, 2),
            "humidity_pct": round(h, 1),
            "battery_v": round(self.battery.read_uv() * self.battery_divider / 1e6, 3),
        }
        if len(self.queue) >= self.queue_max:
            self.queue.pop(0)
            self.dropped += 1
        self.queue.append(reading)

    def flush(self):
        """Send queued readings in order; a reading leaves the queue only once acknowledged."""
        while self.queue and self.link.up:
            reading = self.queue[0]
            reading["dropped"] = self.dropped
            try:
                self.link.publish(self.topic_telemetry, json.dumps(reading), qos=1)
            except OSError:
                return
            self.queue.pop(0)

    def step(self):
        """One pass of the main loop: sample when due, keep the link, send, take commands."""
        now = time.ticks_ms()
        if time.ticks_diff(now, self.next_reading) >= 0:
            try:
                self.take_reading()
            except OSError as e:  # an I2C glitch skips this reading; it must not stop the station
                print("sensor error:", e)
            self.next_reading = time.ticks_add(self.next_reading, self.interval_s * 1000)
            if time.ticks_diff(now, self.next_reading) > 0:  # fell behind (long outage): skip ahead
                self.next_reading = time.ticks_add(now, self.interval_s * 1000)
        self.link.maintain()
        self.flush()
        self.link.poll()

    def sleep_ms(self):
        """How long the loop may idle before something is due."""
        wait = time.ticks_diff(self.next_reading, time.ticks_ms())
        if not self.link.up:
            wait = min(wait, max(0, time.ticks_diff(self.link.next_try, time.ticks_ms())))
        return max(0, min(wait, 1000))


def _restore_seq():
    # The sequence number survives deep sleep in RTC memory.
    try:
        return int(machine.RTC().memory() or b"0")
    except (ValueError, AttributeError):
        return 0


def main():
    cfg = settings.load(DEFAULTS)
    station = Station(cfg)
    wdt = machine.WDT(timeout=cfg["extra"]["wdt_ms"])
    print("weather station", cfg["mqtt"]["client_id"], "interval", station.interval_s, "s")
    while True:
        station.step()
        wdt.feed()
        if cfg["extra"]["deep_sleep"] and not station.queue and station.link.up:
            machine.RTC().memory(str(station.seq).encode())
            station.link.publish(station.topic_status, b"sleeping", retain=True, qos=1)
            station.link.disconnect()
            machine.deepsleep(station.interval_s * 1000)
        time.sleep_ms(station.sleep_ms())
