# Device settings: /hil_config.json (written by the test harness, or by the factory provisioning
# step on a real device) with the firmware's own defaults underneath.
import json

CONFIG_FILE = "hil_config.json"


def load(defaults):
    """A dict: `defaults` overlaid with the config file's mqtt/wifi/http/topic_prefix/extra."""
    cfg = {
        # tls: None (plain MQTT) or {"ca": PEM, "cert": PEM or None, "key": PEM or None,
        # "server_hostname": the name in the broker's certificate}
        "mqtt": {"host": "127.0.0.1", "port": 1883, "user": None, "password": None,
                 "client_id": defaults.get("client_id", "esp32"), "keepalive": 30, "tls": None},
        "wifi": None,
        "http": None,
        "topic_prefix": "",
        "extra": {},
    }
    try:
        with open(CONFIG_FILE) as f:
            found = json.load(f)
    except (OSError, ValueError):
        found = {}
    if not isinstance(found, dict):
        found = {}  # valid JSON but not an object: as good as no file
    mqtt = found.get("mqtt")
    if isinstance(mqtt, dict):
        cfg["mqtt"].update(mqtt)  # a provisioned host alone keeps the default port, keepalive...
    for key in ("wifi", "http", "topic_prefix"):
        if found.get(key) is not None:
            cfg[key] = found[key]
    extra = dict(defaults)
    extra.update(found.get("extra") or {})
    cfg["extra"] = extra
    if not cfg["topic_prefix"]:
        cfg["topic_prefix"] = defaults.get("topic_prefix", "dev/" + cfg["mqtt"]["client_id"])
    return cfg
