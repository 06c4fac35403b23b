"""The board config file: built from a real broker, validated, and readable by MicroPython."""

from __future__ import annotations

import json
import subprocess

import pytest

from micropython_hil.mqtt.broker import AmqttBroker
from micropython_hil.deploy.device_config import CONFIG_FILE, build_config, dumps
from micropython_hil.errors import HarnessError


def test_config_round_trips_to_micropython(tmp_path):
    broker = AmqttBroker(lan=True)
    broker._prepare()  # the LAN host and generated credentials, without starting anything
    broker.port = 1883
    text = dumps(build_config(broker, "weather-1", wifi=("lab", "secret"), cloud_url="http://h:1",
                              topic_prefix="hil/weather-1", extra={"interval": 5}))
    (tmp_path / CONFIG_FILE).write_text(text)
    script = f"import json; c = json.load(open('{tmp_path / CONFIG_FILE}')); print(c['mqtt']['user'], c['wifi']['ssid'])"
    out = subprocess.run(["micropython", "-c", script], capture_output=True, timeout=10).stdout.decode().split()
    assert out == [broker.credentials[0], "lab"]
    assert json.loads(text)["mqtt"]["host"] == broker.host


def test_bad_configs_fail_on_the_host():
    broker = AmqttBroker()
    with pytest.raises(HarnessError, match="client id 'x{24}' must be 1 to 23"):
        build_config(broker, "x" * 24)
    config = build_config(broker, "dev")
    config["mqtt"]["port"] = 0
    with pytest.raises(HarnessError, match="hil_config.json: mqtt/port: 0 is less than the minimum of 1"):
        dumps(config)
