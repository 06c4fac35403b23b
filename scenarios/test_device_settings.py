"""The settings every reference firmware loads (common/lib/settings.py): /hil_config.json, as a
factory provisioning step or the harness writes it, over the firmware's own defaults.

What it promises, each case at its edge: a setting the file leaves out keeps its default (a
provisioned broker host alone still dials port 1883 with a 30 s keepalive, no login, no TLS);
a file that is missing, not JSON or not a JSON object leaves every default, never a crash at
boot; the firmware's extra settings overlay its defaults one by one."""

import json

import pytest

pytestmark = pytest.mark.firmware("firmware_under_test/weather_station")

DEFAULTS = {"client_id": "ws-1", "interval_s": 60, "queue": 32}
LOAD = f"import json, settings\nprint(json.dumps(settings.load({DEFAULTS!r})))"
DEFAULT_MQTT = {"host": "127.0.0.1", "port": 1883, "user": None, "password": None, "client_id": "ws-1",
                "keepalive": 30, "tls": None}


@pytest.fixture
def load(board, firmware):
    """settings.load(DEFAULTS) on the board, after writing /hil_config.json (None: no file)."""
    firmware.deploy(board)

    def load(config_text: bytes | None) -> dict:
        board.exec("import os\ntry:\n    os.remove('hil_config.json')\nexcept OSError:\n    pass")
        if config_text is not None:
            board.put_bytes(config_text, "hil_config.json")
        return json.loads(board.exec(LOAD).strip().splitlines()[-1])

    return load


def test_a_provisioned_broker_host_alone_keeps_every_other_default(load):
    cfg = load(json.dumps({"mqtt": {"host": "broker.lan"}}).encode())
    assert cfg["mqtt"] == dict(DEFAULT_MQTT, host="broker.lan")
    assert cfg["topic_prefix"] == "dev/ws-1" and cfg["wifi"] is None and cfg["http"] is None


def test_what_the_file_gives_replaces_the_default_and_extra_overlays_key_by_key(load):
    cfg = load(json.dumps({"mqtt": {"host": "b", "port": 8883, "client_id": "st-9", "keepalive": 0},
                           "wifi": {"ssid": "lab"}, "topic_prefix": "site/st-9",
                           "extra": {"interval_s": 600}}).encode())
    assert cfg["mqtt"] == dict(DEFAULT_MQTT, host="b", port=8883, client_id="st-9", keepalive=0)
    assert cfg["wifi"] == {"ssid": "lab"} and cfg["topic_prefix"] == "site/st-9"
    assert cfg["extra"] == {"client_id": "ws-1", "interval_s": 600, "queue": 32}


@pytest.mark.parametrize("stored", [None, b"", b"{\"mqtt\": {\"host\": ", b"\xff\xfe garbage", b"[1, 2]", b"null",
                                    b"{\"mqtt\": null, \"extra\": null}"],
                         ids=["missing", "empty", "cut-short", "not-text", "a-list", "null", "null-sections"])
def test_a_missing_or_corrupt_file_leaves_every_default(load, stored):
    cfg = load(stored)
    assert cfg == {"mqtt": DEFAULT_MQTT, "wifi": None, "http": None, "topic_prefix": "dev/ws-1",
                   "extra": DEFAULTS}
