# Soil-moisture node: reads its probe on GPIO32 every interval and publishes a JSON reading.
import json
import time

import machine
from umqtt.simple import MQTTClient

WET_V, DRY_V, DRY_BELOW = 1.0, 2.6, 0.30


def settings():
    cfg = {"mqtt": {"host": "192.168.1.10", "port": 1883, "client_id": "soil-1"},
           "topic_prefix": "farm/soil-1", "extra": {"interval_s": 60}}
    try:
        with open("hil_config.json") as f:
            cfg.update(json.load(f))
    except OSError:
        pass
    return cfg


cfg = settings()
mqtt, prefix = cfg["mqtt"], cfg["topic_prefix"]
interval_s = (cfg.get("extra") or {}).get("interval_s", 60)
probe = machine.ADC(machine.Pin(32))
probe.atten(machine.ADC.ATTN_11DB)

client = MQTTClient(mqtt["client_id"], mqtt["host"], port=mqtt["port"], user=mqtt.get("user"),
                    password=mqtt.get("password"), keepalive=mqtt.get("keepalive") or 30)
client.set_last_will(prefix + "/status", b"offline", retain=True)
client.connect()
client.publish(prefix + "/status", b"online", retain=True)
start = time.time()
seq = 0
while True:
    seq += 1
    volts = probe.read_uv() / 1e6
    moisture = min(1.0, max(0.0, (DRY_V - volts) / (DRY_V - WET_V)))
    reading = {"seq": seq, "moisture": round(moisture, 3), "dry": moisture < DRY_BELOW,
               "uptime_s": time.time() - start}
    client.publish(prefix + "/reading", json.dumps(reading))
    time.sleep(interval_s)
