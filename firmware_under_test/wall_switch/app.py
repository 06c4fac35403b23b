# Wall-switch node. A push button on a GPIO (the interrupt only counts; the main loop debounces)
# sends the relay node it controls a toggle command on that node's command topic, and an event
# on its own <prefix>/press topic. Presses made while the link is down are kept (the oldest
# dropped and counted when too many) and sent in order once it is back. With the relay node's
# state topic in its config, the status LED shows whether the relay it drives is on.
import json
import time

import machine
from machine import Pin

import settings
from link import Link

DEFAULTS = {
    "client_id": "switch-1",
    "button_pin": 4,
    "led_pin": 2,
    "debounce_ms": 150,
    "target_topic": "hil/home-1/cmd",  # the relay node's command topic
    "target_relay": 0,
    "state_topic": "",                 # the relay node's state topic ("": the LED stays off)
    "queue_max": 8,
    "wdt_ms": 30000,
}


class Switch:
    def __init__(self, cfg):
        x = cfg["extra"]
        prefix = cfg["topic_prefix"]
        self.client_id = cfg["mqtt"]["client_id"]
        self.topic_press = prefix + "/press"
        self.target = x["target_topic"]
        self.relay = x["target_relay"]
        self.led = Pin(x["led_pin"], Pin.OUT, value=0)
        self.button = Pin(x["button_pin"], Pin.IN, Pin.PULL_UP)
        self.presses = 0
        self.debounce_ms = x["debounce_ms"]
        self.last_press = time.ticks_add(time.ticks_ms(), -self.debounce_ms)
        self.queue = []  # [seq, command sent] of presses not yet sent
        self.queue_max = x["queue_max"]
        self.dropped = 0
        self.seq = 0
        self.button.irq(trigger=Pin.IRQ_FALLING, handler=self._on_press)
        subscriptions = [x["state_topic"]] if x["state_topic"] else []
        self.link = Link(cfg, prefix + "/status", subscriptions, self.on_state)

    def _on_press(self, pin):
        # Interrupt context: only count; the main loop does the work.
        self.presses += 1

    def handle_button(self):
        if not self.presses:
            return
        self.presses = 0
        now = time.ticks_ms()
        if time.ticks_diff(now, self.last_press) < self.debounce_ms:
            return
        self.last_press = now
        self.seq += 1
        if len(self.queue) >= self.queue_max:
            self.queue.pop(0)
            self.dropped += 1
        self.queue.append([self.seq, False])
        print("button: press", self.seq)

    def on_state(self, topic, msg):
        try:
            on = bool(json.loads(msg)["relays"][self.relay])
        except (ValueError, KeyError, IndexError, TypeError):
            return
        self.led.value(1 if on else 0)
        print("relay", self.relay, "is", "on" if on else "off")

    def flush(self):
        """Send the kept presses in order; each leaves the queue once both messages are acknowledged
        (the command is not sent twice if only the event failed)."""
        while self.queue and self.link.up:
            entry = self.queue[0]
            try:
                if not entry[1]:
                    command = {"id": "%s-%d" % (self.client_id, entry[0]), "op": "toggle", "relay": self.relay}
                    self.link.publish(self.target, json.dumps(command), qos=1)
                    entry[1] = True
                event = {"seq": entry[0], "dropped": self.dropped, "ts": time.time()}
                self.link.publish(self.topic_press, json.dumps(event), qos=1)
            except OSError:
                return
            self.queue.pop(0)

    def step(self):
        self.handle_button()
        if self.link.maintain():
            self.flush()
            self.link.poll()


def main():
    cfg = settings.load(DEFAULTS)
    switch = Switch(cfg)
    wdt = machine.WDT(timeout=cfg["extra"]["wdt_ms"])
    print("wall switch", switch.client_id, "drives", switch.target)
    while True:
        switch.step()
        wdt.feed()
        time.sleep_ms(10)
