# Industrial monitor. The hot loop, step(), samples an ADC at `rate_hz` (1 kHz), smooths it with
# an exponential moving average and detects threshold crossings with hysteresis; each crossing
# is an alarm published at QoS 1 at once. Every `batch_s` the statistics of the filtered signal
# are POSTed to the HTTP endpoint with urequests (kept and retried while it is down).
import json
import time

import machine
from machine import ADC, Pin

import settings
from link import Link

DEFAULTS = {
    "client_id": "monitor-1",
    "adc_pin": 36,
    "rate_hz": 1000,
    "alpha": 0.2,            # EMA smoothing factor
    # Alarm when the filtered signal rises above high_mv (inside the ADC's range at 11 dB
    # attenuation, 150..2450 mV: 2500 was out of reach), clear below high_mv - hysteresis_mv.
    "high_mv": 2200,
    "hysteresis_mv": 200,
    "batch_s": 10,
    "max_batches": 8,
    "wdt_ms": 30000,
}


class Monitor:
    def __init__(self, cfg):
        x = cfg["extra"]
        self.topic_alarm = cfg["topic_prefix"] + "/alarm"
        self.http = (cfg.get("http") or {}).get("base_url")
        self.adc = ADC(Pin(x["adc_pin"]))
        self.adc.atten(ADC.ATTN_11DB)
        self.alpha_q = int(x["alpha"] * 256)  # EMA factor in 1/256ths: integer math, see step()
        self.high = x["high_mv"]
        self.low = x["high_mv"] - x["hysteresis_mv"]
        self.period_us = 1000000 // x["rate_hz"]
        self.batch_ms = x["batch_s"] * 1000
        self.max_batches = x["max_batches"]
        self.wdt_ms = x["wdt_ms"]
        self.filtered = None  # the filtered signal in mV * 256 (fixed point)
        self.alarm = False
        self.alarm_seq = 0
        self.pending_alarms = []
        self.batches = []
        self._reset_stats()
        self.link = Link(cfg, cfg["topic_prefix"] + "/status")

    def _reset_stats(self):
        self.n = 0
        self.total = 0  # sum of the filtered mV this batch
        self.vmin = None
        self.vmax = None
        self.batch_start = time.ticks_ms()

    def step(self):
        """One sample: read, filter, detect; the work the 1 kHz budget is about.

        Integers only: a float is a heap object in MicroPython, and a hot loop that allocates
        makes the chip stop for garbage collection (the hot_loop benchmark measures this)."""
        mv = self.adc.read_uv() // 1000
        f = self.filtered
        f = mv << 8 if f is None else f + ((self.alpha_q * ((mv << 8) - f)) >> 8)
        self.filtered = f
        # Rounded, not truncated: a rising input settles up to 5/256 mV below its level in f, and
        # f >> 8 read a steady 2501 mV as 2500, so a level just over high_mv never raised the alarm.
        v = (f + 128) >> 8
        self.n += 1
        self.total += v
        if self.vmin is None or v < self.vmin:
            self.vmin = v
        if self.vmax is None or v > self.vmax:
            self.vmax = v
        if not self.alarm and v > self.high:
            self._raise_alarm("high", v)
        elif self.alarm and v < self.low:
            self._raise_alarm("normal", v)

    def _raise_alarm(self, state, value):
        self.alarm = state == "high"
        self.alarm_seq += 1
        self.pending_alarms.append(json.dumps({"seq": self.alarm_seq, "state": state,
                                               "value_mv": round(value), "t_ms": time.ticks_ms()}))

    def send_alarms(self):
        while self.pending_alarms and self.link.up:
            try:
                self.link.publish(self.topic_alarm, self.pending_alarms[0], qos=1)
            except OSError:
                return
            self.pending_alarms.pop(0)

    def close_batch(self):
        if self.n:
            self.batches.append({"samples": self.n, "mean_mv": round(self.total / self.n, 1),
                                 "min_mv": self.vmin, "max_mv": self.vmax,
                                 "alarms": self.alarm_seq, "t_ms": time.ticks_ms()})
            del self.batches[:-self.max_batches]
        self._reset_stats()

    def upload(self):
        if not self.batches or not self.http:
            return
        import urequests
        try:
            r = urequests.post(self.http + "/stats", json={"batches": self.batches},
                               headers={"Content-Type": "application/json"})
            ok = 200 <= r.status_code < 300
            r.close()
        except Exception as e:
            # Not only OSError: urequests raises AssertionError, ValueError, NotImplementedError
            # on answers it cannot follow (a 300 without Location). An upload failing in any way
            # must not stop the sampling; the batches stay for the next one.
            print("upload failed:", repr(e))
            return
        if ok:
            self.batches = []
        else:
            print("upload rejected: HTTP", r.status_code)

    def run(self):
        wdt = machine.WDT(timeout=self.wdt_ms)
        next_sample = time.ticks_us()
        while True:
            self.step()
            wdt.feed()  # every sample: a batch may well be longer than the watchdog's period
            if self.pending_alarms:
                self.link.maintain()
                self.send_alarms()
            if time.ticks_diff(time.ticks_ms(), self.batch_start) >= self.batch_ms:
                self.close_batch()
                self.link.maintain()
                self.link.poll()
                self.upload()
                next_sample = time.ticks_us()
            next_sample = time.ticks_add(next_sample, self.period_us)
            wait = time.ticks_diff(next_sample, time.ticks_us())
            if wait > 0:
                time.sleep_us(wait)


def main():
    cfg = settings.load(DEFAULTS)
    monitor = Monitor(cfg)
    print("monitor", cfg["mqtt"]["client_id"], "rate", cfg["extra"]["rate_hz"], "Hz")
    monitor.link.maintain()
    monitor.run()
