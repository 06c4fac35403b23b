# network, as on an ESP32: WLAN in STA and AP mode, on a simulated radio. The firmware's
# sockets still use the host's real network; the WLAN state (connect, drop, refusal, status
# codes) is simulated in board time and driven by the host: sim.wifi.drop(refuse_for=30).
# The link it gives gates those sockets (see socket): once the firmware has called connect(),
# they work only while the station has an IP, and whatever takes that away (a drop, the access
# point leaving, disconnect(), active(False)) loses every open connection (_siminputs.cut).
import _simboot  # noqa: F401  (a REPL may import network first: u-aliases, host inputs)
import _simcore
import _simclock as _c
import _siminputs

tick = _c.tick
_w = _siminputs.wifi
_prof = _simcore.boot["profile"]

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
STAT_CONNECT_FAIL = 205
AUTH_OPEN = 0
AUTH_WEP = 1
AUTH_WPA_PSK = 2
AUTH_WPA2_PSK = 3
AUTH_WPA_WPA2_PSK = 4
MODE_11B = 1
MODE_11G = 2
MODE_11N = 4
_hostname = ["mpy-esp32"]


def hostname(name=None):
    if name is None:
        return _hostname[0]
    _hostname[0] = name


def country(code=None):
    return "01" if code is None else None


class WLAN:
    IF_STA = STA_IF
    IF_AP = AP_IF
    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2
    _ifaces = {}

    def __new__(cls, interface=STA_IF):
        # One object per interface, as on the chip.
        if interface not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        o = WLAN._ifaces.get(interface)
        if o is None:
            o = object.__new__(cls)
            o._if = interface
            o._active = False
            o._requested = False
            o._ssid = None
            o._key = None
            o._connect_at = 0
            o._cfg = {"ssid": "ESP_0A0B0C" if interface == AP_IF else "", "channel": 1,
                      "hostname": _hostname[0], "reconnects": -1, "txpower": 20,
                      "pm": 1, "security": 3, "key": ""}
            o._ip = ("192.168.4.1", "255.255.255.0", "192.168.4.1", "0.0.0.0") \
                if interface == AP_IF else None
            WLAN._ifaces[interface] = o
        return o

    def __init__(self, interface=STA_IF):
        pass

    def active(self, is_active=None):
        tick()
        if is_active is None:
            return self._active
        if not is_active:
            self._lose_link()
        self._active = bool(is_active)
        if not self._active:
            self._requested = False

    def _require_sta(self):
        if self._if != STA_IF:
            raise OSError("STA required")
        if not self._active:
            raise OSError("STA must be active")

    def connect(self, ssid=None, key=None, *, bssid=None):
        tick()
        self._require_sta()
        self._lose_link()  # connecting again leaves the access point first, as the driver does
        self._ssid = self._cfg["ssid"] if ssid is None else ssid
        self._key = key
        self._requested = True
        self._connect_at = _c.now_us() + int(_w["connect_s"] * 1000000)
        _siminputs.watch_station(self._has_ip)

    def disconnect(self):
        tick()
        self._lose_link()
        self._requested = False

    def _has_ip(self):
        return self._active and self._sta_status() == STAT_GOT_IP

    def _lose_link(self):
        if self._if == STA_IF and self._has_ip():
            _siminputs.cut()

    def _sta_status(self):
        if not self._requested:
            return STAT_IDLE
        now = _c.now_us()
        if now < self._connect_at:
            return STAT_CONNECTING
        nets = _w.get("networks")
        if nets is not None:
            if self._ssid not in nets:
                return STAT_NO_AP_FOUND
            if nets[self._ssid] not in (None, self._key or ""):
                return STAT_WRONG_PASSWORD
        # A drop makes the AP unavailable in [dropped_at, refuse_until); a connection started
        # before the drop or during the refusal comes back connect_s after the AP is back
        # (the driver retries forever, as the port's default reconnects=-1 does).
        dropped = _w.get("dropped_at")
        if dropped is not None:
            cu = int(_w["connect_s"] * 1000000)
            start = self._connect_at - cu
            refuse = _w["refuse_until"]
            if start <= dropped or start < refuse:
                if dropped <= now < refuse:
                    return STAT_NO_AP_FOUND
                if now < max(self._connect_at, refuse + cu):
                    return STAT_CONNECTING
        return STAT_GOT_IP

    def status(self, param=None):
        tick()
        if param is None:
            if self._if == AP_IF:
                return STAT_GOT_IP if self._active else STAT_IDLE
            return self._sta_status() if self._active else STAT_IDLE
        if param == "rssi":
            if self._if != STA_IF or self._sta_status() != STAT_GOT_IP:
                raise OSError("STA not connected")
            return _w.get("rssi", -55)
        if param == "stations":
            if self._if != AP_IF:
                raise OSError("AP required")
            return []
        raise ValueError("unknown status param")

    def isconnected(self):
        tick()
        if self._if == AP_IF:
            return False  # no simulated stations join the AP
        return self._active and self._sta_status() == STAT_GOT_IP

    def scan(self):
        tick()
        self._require_sta()
        return [(s.encode(), bytes(6), ch, rssi, sec, False)
                for s, ch, rssi, sec in _w.get("scan") or []]

    def _addr(self):
        if self._if == AP_IF:
            return self._ip
        if self._active and self._sta_status() == STAT_GOT_IP:
            return self._ip or ("192.168.4.2", "255.255.255.0", "192.168.4.1", "192.168.4.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def ifconfig(self, cfg=None):
        tick()
        if cfg is None:
            return self._addr()
        if cfg == "dhcp":
            self._ip = None
        else:
            self._ip = tuple(cfg)

    def ipconfig(self, *args, **kw):
        if kw:
            if "addr4" in kw:
                a = kw["addr4"]
                ip, mask = a if isinstance(a, tuple) else (a.split("/")[0], "255.255.255.0")
                cur = self._addr()
                self._ip = (ip, mask, kw.get("gw4", cur[2]), cur[3])
            return
        ip, mask, gw, _ = self._addr()
        return {"addr4": (ip, mask), "gw4": gw, "dhcp4": self._ip is None}[args[0]]

    def config(self, *args, **kw):
        tick()
        if args and kw:
            raise TypeError("either pos or kw args are allowed")
        if kw:
            for k, v in kw.items():
                if k == "mac":
                    raise ValueError("mac is read-only on the simulated board")
                if k not in self._cfg:
                    raise ValueError("unknown config param")
                self._cfg[k] = v
            return
        if len(args) != 1:
            raise TypeError("can query only one param")
        p = args[0]
        if p == "mac":
            mac = bytearray(bytes.fromhex(_prof["mac"]))
            if self._if == AP_IF:
                mac[5] = (mac[5] + 1) & 0xFF  # the AP MAC is the base MAC + 1, as on the chip
            return bytes(mac)
        if p == "essid":
            p = "ssid"
        if p == "ssid" and self._if == STA_IF and self._requested:
            return self._ssid
        if p not in self._cfg:
            raise ValueError("unknown config param")
        return self._cfg[p]
