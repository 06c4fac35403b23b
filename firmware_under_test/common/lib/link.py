# The device's link to the cloud: WiFi station + MQTT session, reconnecting with capped
# exponential backoff. Never blocks longer than one socket timeout: the main loop stays alive
# (and feeds the watchdog) through any outage.
import time

import network
from umqtt.simple import MQTTClient

SOCKET_TIMEOUT_S = 5


class Link:
    def __init__(self, cfg, status_topic, subscriptions=(), on_message=None,
                 backoff_min_ms=1000, backoff_max_ms=60000):
        self.cfg = cfg
        self.status_topic = status_topic
        self.subscriptions = list(subscriptions)
        self.on_message = on_message
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.backoff_ms = backoff_min_ms
        self.next_try = time.ticks_ms()
        self.client = None
        self.connects = 0
        self.failures = 0
        self.wlan = network.WLAN(network.STA_IF)
        self.last_ping = time.ticks_ms()

    @property
    def up(self):
        return self.client is not None

    def _wifi(self):
        if not self.wlan.active():
            self.wlan.active(True)
        if not self.wlan.isconnected():
            wifi = self.cfg.get("wifi") or {}
            self.wlan.connect(wifi.get("ssid", "hil"), wifi.get("password", ""))
            start = time.ticks_ms()
            while not self.wlan.isconnected():
                if time.ticks_diff(time.ticks_ms(), start) > 10000:
                    raise OSError("wifi: no connection")
                time.sleep_ms(100)

    def maintain(self):
        """Connect if it is time to try; True when the link is up."""
        if self.client is not None:
            if not self.wlan.isconnected():
                self.drop("wifi lost")
            return self.client is not None
        if time.ticks_diff(time.ticks_ms(), self.next_try) < 0:
            return False
        client = None
        try:
            self._wifi()
            m = self.cfg["mqtt"]
            client = MQTTClient(m["client_id"], m["host"], port=m["port"], user=m.get("user"),
                                password=m.get("password"), keepalive=m.get("keepalive", 30))
            client.set_last_will(self.status_topic, b"offline", retain=True, qos=1)
            client.set_callback(self._deliver)
            client.connect(clean_session=False)
            client.sock.setsockopt(6, 1, 1)  # TCP_NODELAY: umqtt writes a packet in pieces
            client.sock.settimeout(SOCKET_TIMEOUT_S)
            self.client = client
            for topic in self.subscriptions:
                client.subscribe(topic, qos=1)
            self.publish(self.status_topic, b"online", retain=True, qos=1)
        except OSError as e:
            self.failures += 1
            print("link: connect failed:", e, "retry in", self.backoff_ms, "ms")
            if client is not None and client.sock is not None:
                client.sock.close()  # a failed connect must not leak its socket
            self._close()
            self.next_try = time.ticks_add(time.ticks_ms(), self.backoff_ms)
            self.backoff_ms = min(self.backoff_ms * 2, self.backoff_max_ms)
            return False
        self.connects += 1
        self.backoff_ms = self.backoff_min_ms
        self.last_ping = time.ticks_ms()
        print("link: online (connect #%d)" % self.connects)
        return True

    def _deliver(self, topic, msg):
        if self.on_message is not None:
            self.on_message(topic, msg)

    def publish(self, topic, payload, retain=False, qos=0):
        """Publish or raise OSError (the caller keeps the message and retries later)."""
        if self.client is None:
            raise OSError("link down")
        try:
            self.client.publish(topic, payload, retain, qos)
        except OSError as e:
            self.drop("publish failed: %s" % e)
            raise

    def poll(self):
        """Deliver incoming messages and keep the session alive; drops the link on error."""
        if self.client is None:
            return
        try:
            self.client.check_msg()
            self.client.sock.settimeout(SOCKET_TIMEOUT_S)  # check_msg leaves the socket blocking
            keepalive_ms = self.cfg["mqtt"].get("keepalive", 30) * 1000
            if keepalive_ms and time.ticks_diff(time.ticks_ms(), self.last_ping) > keepalive_ms // 2:
                self.client.ping()
                self.last_ping = time.ticks_ms()
        except OSError as e:
            self.drop("poll failed: %s" % e)

    def disconnect(self):
        """Leave cleanly (DISCONNECT: the broker does not publish the last will)."""
        if self.client is not None:
            try:
                self.client.disconnect()
            except OSError:
                pass
        self._close()

    def drop(self, why):
        print("link: down:", why)
        self._close()
        self.next_try = time.ticks_ms()

    def _close(self):
        if self.client is not None:
            try:
                self.client.sock.close()
            except Exception:
                pass
        self.client = None
