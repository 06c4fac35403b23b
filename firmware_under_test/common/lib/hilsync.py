# Synchronisation with the other boards of a test and with the test itself, over the MQTT
# broker: barriers and shared values (the device side of micropython_hil's `boards` fixture,
# whose `boards.sync` is the test's side). Like MicroPython's multi-instance tests (NEXT, SET,
# BROADCAST), for any number of boards:
#
#     import hilsync
#     sync = hilsync.Sync()             # settings from /hil_config.json (written by the harness)
#     sync.barrier("ready")             # wait until every party arrived, or SyncTimeout naming who did not
#     sync.set("relay_on", True)        # a value every party can read
#     sync.get("threshold")             # a value another party set (waits for it)
#     sync.wait("phase", 2)             # wait until a value is this
#     sync.close()
#
# Its own MQTT connection (client id from the settings), so it never disturbs the firmware's
# session. Every message is retained at QoS 1 under a base topic unique to the test:
#     <base>/b/<barrier>/<round>/<party>  "1"      <base>/v/<key>  JSON
# Waits block on the socket with a timeout (wall time, also under the simulator's fast time).
# Plain MQTT: a broker that takes TLS only (--broker-tls) is not reached from here yet.
import json
import time

from umqtt.simple import MQTTClient

CONFIG_FILE = "hil_config.json"
_TIMEOUTS = (11, 110, 116)  # EAGAIN (the unix port's timeout), ETIMEDOUT (Linux's, newlib's)


class SyncTimeout(Exception):
    pass


class Sync:
    def __init__(self, config=CONFIG_FILE, timeout_ms=10000):
        with open(config) as f:
            cfg = json.load(f)
        s = (cfg.get("extra") or {}).get("hilsync")
        if not s:
            raise ValueError("hilsync: %s has no hilsync settings (start the board with the "
                             "harness's boards fixture)" % config)
        self.me = s["me"]
        self.parties = s["parties"]
        self.base = s["base"]
        self.timeout_ms = timeout_ms
        self.values = {}
        self._arrived = {}  # "barrier/round" -> {party: True}
        self._rounds = {}
        m = cfg["mqtt"]
        self.client = MQTTClient(s["client_id"], m["host"], port=m["port"], user=m.get("user"),
                                 password=m.get("password"), keepalive=0)
        self.client.set_callback(self._on_message)
        self.client.connect()
        self.client.subscribe((self.base + "/#").encode(), qos=1)

    def _on_message(self, topic, msg):
        parts = topic.decode()[len(self.base) + 1:].split("/")
        if parts[0] == "b" and len(parts) == 4:
            arrived = self._arrived.setdefault(parts[1] + "/" + parts[2], {})
            if msg:
                arrived[parts[3]] = True
            else:
                arrived.pop(parts[3], None)
        elif parts[0] == "v" and len(parts) == 2:
            if msg:
                self.values[parts[1]] = json.loads(msg)
            else:
                self.values.pop(parts[1], None)

    def _pump(self, done, timeout_ms, why):
        # Handle what arrives until done() holds; SyncTimeout(why()) at the deadline.
        timeout_ms = self.timeout_ms if timeout_ms is None else timeout_ms
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while not done():
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                raise SyncTimeout(why(timeout_ms))
            self.client.sock.settimeout(min(left, 1000) / 1000)
            try:
                self.client.wait_msg()
            except OSError as e:
                if e.args[0] not in _TIMEOUTS:
                    raise

    def _publish(self, topic, value):
        self.client.publish(topic.encode(), value, True, 1)

    def barrier(self, name, timeout_ms=None, parties=None):
        """Arrive at the next round of barrier `name` and wait for the other parties."""
        n = self._rounds.get(name, 0) + 1
        self._rounds[name] = n
        key = "%s/%d" % (name, n)
        self._publish("%s/b/%s/%s" % (self.base, key, self.me), b"1")
        want = parties or self.parties

        def missing():
            arrived = self._arrived.get(key, {})
            return [p for p in want if p not in arrived]

        self._pump(lambda: not missing(), timeout_ms,
                   lambda t: "barrier %s (round %d): %s did not arrive within %d ms"
                   % (name, n, ", ".join(missing()), t))
        return n

    def set(self, key, value):
        """Share a value with every party (as JSON)."""
        self.values[key] = value
        self._publish("%s/v/%s" % (self.base, key), json.dumps(value).encode())

    def get(self, key, timeout_ms=None):
        """The value of `key`, waiting for a party to set it."""
        self._pump(lambda: key in self.values, timeout_ms,
                   lambda t: "value %s was not set within %d ms" % (key, t))
        return self.values[key]

    def wait(self, key, value, timeout_ms=None):
        """Wait until `key` holds `value`."""
        self._pump(lambda: self.values.get(key) == value, timeout_ms,
                   lambda t: "value %s did not become %r within %d ms (it is %r)"
                   % (key, value, t, self.values.get(key)))

    def close(self):
        try:
            self.client.disconnect()
        except OSError:
            pass
