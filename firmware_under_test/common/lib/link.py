# The device's link to the cloud: WiFi station + MQTT session (over TLS when the config has
# mqtt.tls), reconnecting with capped exponential backoff. Never blocks longer than one socket
# timeout: the main loop stays alive (and feeds the watchdog) through any outage.
import sys
import time

import network
from umqtt.simple import MQTTClient

SOCKET_TIMEOUT_S = 5


def _der(pem):
    # PEM text -> DER: mbedTLS in some MicroPython builds (the unix port's) parses only DER.
    import binascii
    body = "".join(line for line in pem.split("\n") if line and not line.startswith("-----"))
    return binascii.a2b_base64(body)


class _Tls:
    """What umqtt.simple wraps its socket with: the CA (and client certificate) from the config.

    umqtt.simple >= 1.4 calls ssl.wrap_socket(sock, server_hostname=...) on the object passed
    as ssl=; <= 1.3.4 (the one on PyPI) imports `ussl` and calls ussl.wrap_socket(sock, ...),
    and MicroPython >= 1.23 has no ussl, so this object stands in for that module too. It keeps
    the TCP socket: timeouts and TCP_NODELAY are set there, as the TLS socket has no such methods.
    """

    def __init__(self, tls, host):
        import ssl
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_verify_locations(cadata=_der(tls["ca"]))
        if tls.get("cert"):
            self.ctx.load_cert_chain(_der(tls["cert"]), _der(tls["key"]))
        # The name in the broker's certificate: the broker's own even when we dial a proxy.
        self.server_hostname = tls.get("server_hostname") or host
        self.raw = None

    def wrap_socket(self, sock, server_hostname=None, **_ignored):
        sock.setsockopt(6, 1, 1)  # TCP_NODELAY: umqtt writes a packet in pieces, each a TLS record
        sock.settimeout(SOCKET_TIMEOUT_S)
        self.raw = sock
        return self.ctx.wrap_socket(sock, server_hostname=self.server_hostname)


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
        m = cfg["mqtt"]
        self.tls = _Tls(m["tls"], m["host"]) if m.get("tls") else None
        self.raw = None  # the TCP socket under the MQTT session (under TLS when there is TLS)

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
                                password=m.get("password"), keepalive=m.get("keepalive", 30),
                                ssl=self.tls or False)
            if self.tls is not None and hasattr(client, "ssl_params"):
                sys.modules["ussl"] = self.tls  # umqtt.simple <= 1.3.4: see _Tls
            client.set_last_will(self.status_topic, b"offline", retain=True, qos=1)
            client.set_callback(self._deliver)
            client.connect(clean_session=False)
            self.raw = self.tls.raw if self.tls is not None else client.sock
            self.raw.setsockopt(6, 1, 1)  # TCP_NODELAY: umqtt writes a packet in pieces
            self.raw.settimeout(SOCKET_TIMEOUT_S)
            self.client = client
            for topic in self.subscriptions:
                client.subscribe(topic, qos=1)
            self.publish(self.status_topic, b"online", retain=True, qos=1)
        except (OSError, ValueError) as e:
            # ValueError: MicroPython's TLS raises it for a certificate that fails verification
            # (a broker our CA did not sign): refused like any failed connect, and tried again.
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
            self.raw.settimeout(SOCKET_TIMEOUT_S)  # check_msg leaves the socket blocking
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
