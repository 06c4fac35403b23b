# Home-automation node. Commands arrive as JSON on <prefix>/cmd; each gets a reply on
# <prefix>/reply (ok, or an error saying what was wrong: a malformed command never crashes the
# node). Relay state is published retained on <prefix>/state and survives reboots in NVS.
# The push button toggles relay 0 from a pin interrupt (debounced in the main loop).
import json
import time

import esp32
import machine
from machine import Pin

import settings
from link import Link

DEFAULTS = {
    "client_id": "home-1",
    "relay_pins": [26, 27],
    "button_pin": 25,
    "debounce_ms": 200,
    "wdt_ms": 30000,
}
OPS = ("set", "toggle", "get", "ping")
MAX_COMMAND_BYTES = 512


class CommandError(Exception):
    pass


class Node:
    def __init__(self, cfg):
        x = cfg["extra"]
        prefix = cfg["topic_prefix"]
        self.topic_cmd = prefix + "/cmd"
        self.topic_reply = prefix + "/reply"
        self.topic_state = prefix + "/state"
        self.relays = [Pin(p, Pin.OUT, value=0) for p in x["relay_pins"]]
        self.nvs = esp32.NVS("relays")
        self._restore()
        self.button = Pin(x["button_pin"], Pin.IN, Pin.PULL_UP)
        self.button_presses = 0
        self.debounce_ms = x["debounce_ms"]
        self.last_press = time.ticks_add(time.ticks_ms(), -x["debounce_ms"])
        self.button.irq(trigger=Pin.IRQ_FALLING, handler=self._on_button)
        self.state_dirty = True
        self.replies = []
        self.handled = 0
        self.link = Link(cfg, prefix + "/status", [self.topic_cmd], self.on_command)

    # -- relays and NVS ----------------------------------------------------------------
    def _restore(self):
        try:
            bits = self.nvs.get_i32("state")
        except OSError:  # first boot: nothing stored yet
            bits = 0
        for i, relay in enumerate(self.relays):
            relay.value((bits >> i) & 1)

    def _save(self):
        bits = 0
        for i, relay in enumerate(self.relays):
            bits |= relay.value() << i
        self.nvs.set_i32("state", bits)
        self.nvs.commit()

    def states(self):
        return [bool(r.value()) for r in self.relays]

    def switch(self, index, on):
        self.relays[index].value(1 if on else 0)
        self._save()
        self.state_dirty = True

    # -- inputs --------------------------------------------------------------------------
    def _on_button(self, pin):
        # Interrupt context: only count; the main loop does the work.
        self.button_presses += 1

    def handle_button(self):
        if not self.button_presses:
            return
        self.button_presses = 0
        now = time.ticks_ms()
        if time.ticks_diff(now, self.last_press) < self.debounce_ms:
            return
        self.last_press = now
        self.switch(0, not self.relays[0].value())
        print("button: relay 0", "on" if self.relays[0].value() else "off")

    def on_command(self, topic, msg):
        reply = {"id": None}
        try:
            cmd = self.parse(msg)
            reply["id"] = cmd.get("id")
            reply.update(self.execute(cmd))
            reply["ok"] = True
        except CommandError as e:
            reply["ok"] = False
            reply["error"] = str(e)
        self.handled += 1
        self.replies.append(json.dumps(reply))

    def parse(self, msg):
        if len(msg) > MAX_COMMAND_BYTES:
            raise CommandError("command too long (%d bytes, max %d)" % (len(msg), MAX_COMMAND_BYTES))
        try:
            cmd = json.loads(msg.decode())
        except (UnicodeError, ValueError):
            raise CommandError("not valid JSON")
        if not isinstance(cmd, dict):
            raise CommandError("command must be a JSON object")
        cid = cmd.get("id")
        if cid is not None and not isinstance(cid, (str, int)):
            raise CommandError("id must be a string or an integer")
        if cmd.get("op") not in OPS:
            raise CommandError("unknown op %r (known: %s)" % (cmd.get("op"), ", ".join(OPS)))
        return cmd

    def execute(self, cmd):
        op = cmd["op"]
        if op == "ping":
            return {"pong": True}
        if op == "get":
            return {"relays": self.states()}
        relay = cmd.get("relay")
        if not isinstance(relay, int) or isinstance(relay, bool) or not 0 <= relay < len(self.relays):
            raise CommandError("relay must be an integer 0..%d" % (len(self.relays) - 1))
        if op == "toggle":
            self.switch(relay, not self.relays[relay].value())
        else:
            state = cmd.get("state")
            if not isinstance(state, bool):
                raise CommandError("state must be true or false")
            self.switch(relay, state)
        return {"relays": self.states()}

    # -- main loop -------------------------------------------------------------------------
    def step(self):
        self.handle_button()
        if not self.link.maintain():
            return
        self.link.poll()
        try:
            while self.replies:
                self.link.publish(self.topic_reply, self.replies[0], qos=1)
                self.replies.pop(0)
            if self.state_dirty:
                self.link.publish(self.topic_state, json.dumps({"relays": self.states()}), retain=True, qos=1)
                self.state_dirty = False
        except OSError:
            pass  # the link dropped; the replies and state go out after reconnecting


def main():
    cfg = settings.load(DEFAULTS)
    node = Node(cfg)
    wdt = machine.WDT(timeout=cfg["extra"]["wdt_ms"])
    print("home node", cfg["mqtt"]["client_id"], "relays", node.states())
    while True:
        node.step()
        wdt.feed()
        time.sleep_ms(10)
