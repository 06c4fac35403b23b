# Battery node application. Each wake: take a reading (SHT3x temperature and humidity, battery
# voltage), fetch the commands the gateway held while the node slept (PINGREQ with the client
# id: they arrive before the gateway's PINGRESP), become active (CONNECT without clean session),
# publish the queued readings at QoS 1, answer the commands, tell the gateway how long it will
# sleep (DISCONNECT with a duration) and deep-sleep. What must survive deep sleep lives in RTC
# memory: the sequence number, readings not yet acknowledged (with their message ids, so a
# retransmission carries DUP), the gateway's address, the topic ids, the interval.
# At power-on (or when the gateway has forgotten the node) it finds the gateway (SEARCHGW, if
# configured), connects with a clean session and a will, registers its topics and subscribes.
import json
import time

import machine
import network
from machine import ADC, I2C, Pin

import mqttsn
import settings

DEFAULTS = {
    "client_id": "battery-1",
    "interval_s": 600,        # seconds between readings (deep sleep in between)
    "deep_sleep": True,       # False: stay powered and sleep with time.sleep (same protocol)
    "discover": False,        # find the gateway with SEARCHGW instead of the configured address
    "broadcast": ["255.255.255.255", 1885],   # where SEARCHGW goes
    "retry_ms": 1000,         # MQTT-SN retry timer (board time)
    "retries": 8,
    "queue_max": 6,           # readings kept in RTC memory while the gateway cannot be reached
    "hello_topic_id": 0,      # a predefined topic id: announce power-on there at QoS -1 (0: no)
    "i2c_scl": 22, "i2c_sda": 21, "sht3x_address": 0x44,
    "battery_pin": 35, "battery_divider": 2.0,
}
MIN_INTERVAL_S, MAX_INTERVAL_S = 10, 86400
RTC_BYTES = 2000              # the ESP32 keeps 2048 bytes of RTC memory for MicroPython
MAX_REPLIES = 4


def _crc8(data):
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _load_rtc():
    try:
        st = json.loads(machine.RTC().memory() or b"{}")
        return st if isinstance(st, dict) else {}
    except ValueError:
        return {}


class Node:
    def __init__(self, cfg):
        x = cfg["extra"]
        self.cfg = cfg
        self.x = x
        prefix = cfg["topic_prefix"]
        self.t_telemetry = prefix + "/telemetry"
        self.t_status = prefix + "/status"
        self.t_cmd = prefix + "/cmd"
        self.t_reply = prefix + "/reply"
        self.st = _load_rtc()
        self.st.setdefault("seq", 0)
        self.st.setdefault("q", [])
        self.st.setdefault("d", 0)
        self.st.setdefault("r", [])   # replies to commands, sent at the next chance
        self.interval_s = self.st.get("i") or x["interval_s"]
        m = cfg["mqtt"]
        self.client = mqttsn.Client(m["client_id"], keepalive=m.get("keepalive", 30),
                                    retry_ms=x["retry_ms"], retries=x["retries"])
        self.client.set_callback(self.on_message)
        if self.st.get("c"):
            self.client.restore(self.st["c"])
        if self.client.gw is None and not x["discover"]:
            self.client.set_gateway(m["host"], m["port"])
        self.i2c = I2C(0, scl=Pin(x["i2c_scl"]), sda=Pin(x["i2c_sda"]))
        self.battery = ADC(Pin(x["battery_pin"]))
        self.battery.atten(ADC.ATTN_11DB)

    # -- sensing
    def read_sht3x(self):
        """(temperature degC, humidity %RH) from a single-shot measurement, or (None, None)."""
        addr = self.x["sht3x_address"]
        try:
            self.i2c.writeto(addr, b"\x24\x00")   # single shot, high repeatability, no stretching
            time.sleep_ms(16)
            d = self.i2c.readfrom(addr, 6)
        except OSError as e:
            print("node: sht3x failed:", e)
            return None, None
        if _crc8(d[0:2]) != d[2] or _crc8(d[3:5]) != d[5]:
            print("node: sht3x CRC mismatch")
            return None, None
        t = -45 + 175 * ((d[0] << 8) | d[1]) / 65535
        h = 100 * ((d[3] << 8) | d[4]) / 65535
        return round(t, 2), round(h, 1)

    def take_reading(self):
        self.st["seq"] += 1
        t, h = self.read_sht3x()
        reading = {"seq": self.st["seq"], "ts": time.time(), "temperature_c": t, "humidity_pct": h,
                   "battery_v": round(self.battery.read_uv() * self.x["battery_divider"] / 1e6, 3),
                   "dropped": self.st["d"]}
        q = self.st["q"]
        q.append([json.dumps(reading), 0])
        if len(q) > self.x["queue_max"]:
            q.pop(0)
            self.st["d"] += 1

    # -- commands (delivered by the gateway during the wake exchange)
    def on_message(self, topic, msg, qos, retain):
        reply = {"ok": True, "seq": self.st["seq"]}
        try:
            cmd = json.loads(msg)
            if not isinstance(cmd, dict):
                raise ValueError("not a JSON object")
            if "id" in cmd:
                if type(cmd["id"]) is not int:
                    raise ValueError("id must be an integer")
                reply["id"] = cmd["id"]
            if "interval_s" in cmd:
                interval = cmd["interval_s"]
                if type(interval) is not int or not MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S:
                    raise ValueError("interval_s out of range")
                self.interval_s = self.st["i"] = interval
                reply["interval_s"] = interval
                print("node: interval now", interval, "s")
        except ValueError as e:
            print("node: cmd rejected:", e)
            reply = {"ok": False, "seq": self.st["seq"], "error": str(e)[:40]}
        if len(self.st["r"]) < MAX_REPLIES:
            self.st["r"].append(json.dumps(reply))

    # -- the link
    def wifi(self):
        wlan = network.WLAN(network.STA_IF)
        if not wlan.active():
            wlan.active(True)
        if not wlan.isconnected():
            w = self.cfg.get("wifi") or {}
            wlan.connect(w.get("ssid", "hil"), w.get("password", ""))
            start = time.ticks_ms()
            while not wlan.isconnected():
                if time.ticks_diff(time.ticks_ms(), start) > 10000:
                    raise OSError("wifi: no connection")
                time.sleep_ms(50)

    def setup(self):
        """A new session: connect with a will, register, subscribe, announce."""
        c = self.client
        self.st["s"] = 0
        c.connect(clean=True, will=(self.t_status, b"offline", 1, True))
        c.register(self.t_telemetry)
        c.register(self.t_reply)
        c.subscribe(self.t_cmd + "/#", qos=1)
        c.publish(self.t_status, b"online", qos=1, retain=True)
        self.st["s"] = 1
        self.renewed = c.renewed
        print("node: connected, topics registered")

    def exchange(self, woke):
        """One wake's conversation with the gateway."""
        c = self.client
        if self.x["discover"] and c.gw is None:
            host, port = self.x["broadcast"]
            gw_id = c.search(host, port)
            print("node: gateway", gw_id, "at %s:%d" % mqttsn.hostport(c.gw))
        if not woke and self.x["hello_topic_id"]:   # QoS -1: no connection needed
            c.publish(self.x["hello_topic_id"], b"power-on", qos=-1)
        session = self.st.get("s")
        if session and woke:
            try:
                c.ping(wake=True)     # the buffered commands come before the PINGRESP
            except mqttsn.GatewayLost:
                print("node: the gateway lost our session")
                session = 0
            except OSError:
                pass                  # no PINGRESP: try to become active anyway
        if session:
            c.connect(clean=False)
        else:
            self.setup()
        self.renewed = c.renewed
        self.flush()
        c.sleep(self.interval_s)

    def flush(self):
        """Send queued readings in order; one leaves the queue only once acknowledged."""
        c = self.client
        q = self.st["q"]
        while q:
            item = q[0]
            c.last_mid = 0
            try:
                c.publish(self.t_telemetry, item[0], qos=1, mid=item[1])
            except OSError:
                item[1] = c.last_mid   # retransmitted with DUP at the next wake
                raise
            q.pop(0)
            if c.renewed != self.renewed:
                # The gateway had forgotten our topic ids (it restarted while we slept, and our
                # wake's PINGREQ did not reach it): our session there is new, without will or
                # subscription. Set it up again.
                print("node: the gateway lost our topic ids")
                self.setup()
        r = self.st["r"]
        while r:
            c.publish(self.t_reply, r[0], qos=1)
            r.pop(0)

    def cycle(self, woke):
        self.take_reading()
        try:
            self.wifi()
            self.exchange(woke)
        except mqttsn.MQTTSNError as e:
            print("node: gateway refused:", e)
            self.st["s"] = 0
        except OSError as e:
            print("node: gateway unreachable:", e)
        self.save()

    def save(self):
        self.st["c"] = self.client.state()
        data = json.dumps(self.st)
        if len(data) > RTC_BYTES:  # the topic ids the gateway taught us can be learnt again
            self.st["c"] = self.client.state(all_ids=False)
            data = json.dumps(self.st)
        while len(data) > RTC_BYTES and self.st["q"]:
            self.st["q"].pop(0)
            self.st["d"] += 1
            data = json.dumps(self.st)
        machine.RTC().memory(data.encode())


def main():
    cfg = settings.load(DEFAULTS)
    x = cfg["extra"]
    node = Node(cfg)
    woke = machine.reset_cause() == machine.DEEPSLEEP_RESET
    print("battery node", cfg["mqtt"]["client_id"], "woke" if woke else "power-on", "interval", node.interval_s, "s")
    while True:
        node.cycle(woke)
        if x["deep_sleep"]:
            print("node: sleeping", node.interval_s, "s")
            machine.deepsleep(node.interval_s * 1000)
        time.sleep(node.interval_s)
        woke = True
