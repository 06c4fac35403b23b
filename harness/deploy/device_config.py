"""The config file the harness writes to a board before its firmware starts.

Firmware learns where the broker is without edits by reading ``/hil_config.json`` (CONFIG_FILE, at
the root of the board's filesystem) at boot. The harness's Board writes it on deploy; on a board
that has none, firmware falls back to its own defaults. Schema (JSON object; every key present,
values may be null where noted)::

    {
      "version": 1,                   # schema version of this file
      "mqtt": {
        "host": "192.168.1.20",       # broker address as the board must dial it
        "port": 1883,
        "user": "hil-1a2b3c4d",       # null when the broker accepts anonymous clients (loopback)
        "password": "...",            # null likewise
        "client_id": "weather-1",     # MQTT client id the firmware should use
        "keepalive": 30,              # seconds; firmware should pass it to MQTTClient(keepalive=)
        "tls": {                      # optional; null (or absent): plain MQTT
          "ca": "-----BEGIN CERTIFICATE-----...",   # PEM: the CA to verify the broker against
          "cert": "-----BEGIN CERTIFICATE-----...", # PEM: the board's certificate (mutual TLS), or null
          "key": "-----BEGIN PRIVATE KEY-----...",  # PEM: its key, or null
          "server_hostname": "192.168.1.20"         # the name the broker's certificate is for
        }
      },
      "wifi": {"ssid": "lab-ap", "password": "..."},   # null on the simulator (no WiFi)
      "http": {"base_url": "http://192.168.1.20:8080"}, # the `cloud` endpoint, or null
      "topic_prefix": "hil/weather-1",                  # prefix for the device's topics, or ""
      "extra": {}                                       # test-specific settings
    }

Reading it on the device::

    import functools
import json
    try:
        with open("/hil_config.json") as f:
            cfg = json.load(f)
    except OSError:
        cfg = None
"""

from __future__ import annotations

import functools
import json
from typing import Any

from ..errors import HarnessError
from ..secret import secret

CONFIG_FILE = "hil_config.json"
SCHEMA_VERSION = 1

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["version", "mqtt", "wifi", "http", "topic_prefix", "extra"],
    "properties": {
        "version": {"const": SCHEMA_VERSION},
        "mqtt": {
            "type": "object",
            "required": ["host", "port", "user", "password", "client_id", "keepalive"],
            "properties": {
                "host": {"type": "string", "minLength": 1},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "user": {"type": ["string", "null"]},
                "password": {"type": ["string", "null"]},
                "client_id": {"type": "string", "minLength": 1, "maxLength": 23},
                "keepalive": {"type": "integer", "minimum": 0, "maximum": 65535},
                "tls": {
                    "type": ["object", "null"],
                    "required": ["ca", "cert", "key", "server_hostname"],
                    "properties": {
                        "ca": {"type": "string", "pattern": "-----BEGIN CERTIFICATE-----"},
                        "cert": {"type": ["string", "null"], "pattern": "-----BEGIN CERTIFICATE-----"},
                        "key": {"type": ["string", "null"], "pattern": "-----BEGIN [A-Z ]*PRIVATE KEY-----"},
                        "server_hostname": {"type": "string", "minLength": 1},
                    },
                },
            },
        },
        "wifi": {
            "type": ["object", "null"],
            "required": ["ssid", "password"],
            "properties": {"ssid": {"type": "string", "minLength": 1}, "password": {"type": "string"}},
        },
        "http": {"type": ["object", "null"], "required": ["base_url"],
                 "properties": {"base_url": {"type": "string"}}},
        "topic_prefix": {"type": "string"},
        "extra": {"type": "object"},
    },
}


def build_config(broker: Any, client_id: str, *, wifi: tuple[str, str] | None = None,
                 cloud_url: str | None = None, keepalive: int = 30, topic_prefix: str = "",
                 extra: dict | None = None, tls: Any = None) -> dict:
    """The config dict for one board; `broker` is a harness Broker (host, port, credentials);
    `tls` what the board needs for a TLS broker (a config_files.DeviceTls), or None."""
    if not client_id or len(client_id) > 23:
        # MQTT 3.1.1 only promises client ids of 1..23 characters (umqtt and small brokers hold to it).
        raise HarnessError(f"device config: client id {client_id!r} must be 1 to 23 characters")
    user, password = broker.credentials or (None, None)
    return {
        "version": SCHEMA_VERSION,
        # Passwords as Secrets: the file on the board gets them, a printed config does not.
        "mqtt": {"host": broker.host, "port": broker.port, "user": user, "password": secret(password),
                 "client_id": client_id, "keepalive": keepalive,
                 # The key as a Secret, like the passwords.
                 "tls": {"ca": tls.ca_cert, "cert": tls.client_cert, "key": secret(tls.client_key),
                         "server_hostname": tls.server_name} if tls is not None else None},
        "wifi": {"ssid": wifi[0], "password": secret(wifi[1])} if wifi else None,
        "http": {"base_url": cloud_url} if cloud_url else None,
        "topic_prefix": topic_prefix,
        "extra": dict(extra or {}),
    }


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    """The schema's validator, built once (checking the schema itself costs milliseconds, and a
    fleet writes a config per board)."""
    import jsonschema

    return jsonschema.Draft202012Validator(SCHEMA)


def dumps(config: dict) -> str:
    """The file's text (validated, so a bad config fails on the host, not on the board)."""
    import jsonschema

    try:
        _validator().validate(config)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise HarnessError(f"device config {CONFIG_FILE}: {where}: {exc.message}") from None
    return json.dumps(config, separators=(",", ":"))
