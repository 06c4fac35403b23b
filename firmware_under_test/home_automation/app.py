# Home-automation node. Commands arrive as JSON on <prefix>/cmd; each gets a reply on
# <prefix>/reply (ok, or an error saying what was wrong: a malformed command never crashes the
# node). Relay state is published retained on <prefix>/state and survives reboots in NVS.
# The push button toggles relay 0 from a pin interrupt (debounced in the main loop).
import gc
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


def _text(s):
    """s as real text, or None. MicroPython's bytes.decode() lets overlong sequences through
    (b"\xc0\xaf" for "/") and code points past U+10FFFF, and its json decodes a "\ud83d\ude00"
    escape pair to two lone surrogates: echoed in a reply, either is bytes that are not UTF-8,
    unreadable to a JSON consumer. Overlong text is refused; surrogate pairs are joined.

    Works on the encoded bytes: iterating a str's characters interns every distinct non-ASCII
    character as a qstr, for good, a slow heap leak under arbitrary input (fuzzing found it)."""
    b = s.encode()
    n = len(b)
    out = None  # a rebuilt copy, only once a surrogate pair needs joining
    i = 0
    while i < n:
        c = b[i]
        if c < 0x80:
            k, lo = 1, 0
        elif 0xC2 <= c <= 0xDF:
            k, lo = 2, 0x80
        elif 0xE0 <= c <= 0xEF:
            k, lo = 3, 0x800
        elif 0xF0 <= c <= 0xF4:
            k, lo = 4, 0x10000
        else:
            return None
        cp = _code_point(b, i, k)
        if cp is None or cp < lo or cp > 0x10FFFF or 0xDC00 <= cp <= 0xDFFF:
            return None
        if 0xD800 <= cp <= 0xDBFF:  # a high surrogate: joined with the low one after it
            low = _code_point(b, i + 3, 3) if i + 3 < n and b[i + 3] == 0xED else None
            if low is None or not 0xDC00 <= low <= 0xDFFF:
                return None
            if out is None:
                out = bytearray(b[:i])
            out.extend(_utf8_4(0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)))
            i += 6
            continue
        if out is not None:
            out.extend(b[i:i + k])
        i += k
    return s if out is None else out.decode()


def _utf8_4(cp):
    # By hand: chr() would intern the character, as iterating does.
    return bytes((0xF0 | cp >> 18, 0x80 | (cp >> 12) & 0x3F, 0x80 | (cp >> 6) & 0x3F, 0x80 | cp & 0x3F))


def _code_point(b, i, k):
    """The code point of the k-byte UTF-8 sequence at b[i], or None if it is cut short or broken."""
    if i + k > len(b):
        return None
    cp = b[i] & (0x7F >> k) if k > 1 else b[i]
    for j in range(i + 1, i + k):
        if b[j] & 0xC0 != 0x80:
            return None
        cp = (cp << 6) | (b[j] & 0x3F)
    return cp


def _shown(value):
    return _text(repr(value)) or "(not valid text)"


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
            cmd = self.parse(msg, reply)
            reply.update(self.execute(cmd))
            reply["ok"] = True
        except CommandError as e:
            reply["ok"] = False
            reply["error"] = str(e)
        except MemoryError:
            # A fragmented heap can refuse one message's buffers: answer, collect, live on.
            gc.collect()
            reply["ok"] = False
            reply["error"] = "out of memory"
        # Bytes, not str: umqtt sizes a packet by len(msg), which counts characters of a str,
        # so a reply with non-ASCII text would corrupt the MQTT stream.
        self.replies.append(json.dumps(reply).encode())

    def parse(self, msg, reply=None):
        """The command as a dict; its id goes into `reply` as soon as it is known to be valid, so
        a refusal is answered under the id of the command it refuses."""
        if len(msg) > MAX_COMMAND_BYTES:
            raise CommandError("command too long (%d bytes, max %d)" % (len(msg), MAX_COMMAND_BYTES))
        try:
            cmd = json.loads(msg.decode())
        except (UnicodeError, ValueError):
            raise CommandError("not valid JSON")
        if not isinstance(cmd, dict):
            raise CommandError("command must be a JSON object")
        cid = cmd.get("id")
        if isinstance(cid, str):
            cid = cmd["id"] = _text(cid)
            if cid is None:
                raise CommandError("id must be a string or an integer (valid text)")
        elif "id" in cmd and (not isinstance(cid, int) or isinstance(cid, bool)):
            raise CommandError("id must be a string or an integer")
        if reply is not None:
            reply["id"] = cid
        if cmd.get("op") not in OPS:
            raise CommandError("unknown op %s (known: %s)" % (_shown(cmd.get("op")), ", ".join(OPS)))
        return cmd

    def execute(self, cmd):
        op = cmd["op"]
        # Fields are checked whenever present (as schemas/command.json says), not only by the
        # ops that use them: a mistyped command is refused rather than half obeyed.
        if "relay" in cmd:
            relay = cmd["relay"]
            if not isinstance(relay, int) or isinstance(relay, bool) or not 0 <= relay < len(self.relays):
                raise CommandError("relay must be an integer 0..%d" % (len(self.relays) - 1))
        if "state" in cmd and not isinstance(cmd["state"], bool):
            raise CommandError("state must be true or false")
        if op == "ping":
            gc.collect()  # free heap after a collection: comparable across pings (leak checks)
            return {"pong": True, "heap_free": gc.mem_free()}
        if op == "get":
            return {"relays": self.states()}
        relay = cmd.get("relay")  # set and toggle need one; checked above when present
        if relay is None:
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
        except OSError:
            return  # the link dropped; the replies go out after reconnecting
        if self.state_dirty:
            # Cleared before publishing: umqtt takes incoming messages while it waits for the
            # PUBACK, and a command taken there sets it again (clearing it after lost that change).
            self.state_dirty = False
            try:
                self.link.publish(self.topic_state, json.dumps({"relays": self.states()}), retain=True, qos=1)
            except OSError:
                self.state_dirty = True  # the link dropped; the state goes out after reconnecting


def main():
    cfg = settings.load(DEFAULTS)
    node = Node(cfg)
    wdt = machine.WDT(timeout=cfg["extra"]["wdt_ms"])
    print("home node", cfg["mqtt"]["client_id"], "relays", node.states())
    while True:
        node.step()
        wdt.feed()
        time.sleep_ms(10)
