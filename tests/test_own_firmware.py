"""A team's firmware as it is: its own config file and topic scheme, from a folder anywhere."""

import json
import time

import pytest

from micropython_hil import BoardException, Firmware, FirmwareError, Secret, TelemetryError
from micropython_hil.deploy.config_files import Endpoints, render

# Written the way a team writes it, knowing nothing of the harness: its own config file
# (station.json), its own topics, umqtt.simple from its manifest.
STATION_MAIN = """\
import json
import time

import machine
from umqtt.simple import MQTTClient

with open("station.json") as f:
    cfg = json.load(f)
base = "stations/%s/" % cfg["id"]
client = MQTTClient(cfg["id"], cfg["broker"], port=cfg["port"], user=cfg["user"],
                    password=cfg["pass"], keepalive=30)
client.set_last_will(base + "status", b"lost", retain=True)
client.connect()
client.publish(base + "status", b"up", retain=True)
probe = machine.ADC(machine.Pin(34))
n = 0
while True:
    n += 1
    client.publish(base + "reading", json.dumps({"n": n, "uv": probe.read_uv()}))
    time.sleep(cfg["every"])
"""
STATION_JSON = {"broker": "{host}", "port": "{port}", "id": "{client_id}", "user": "{user}",
                "pass": "{password}", "every": "{every}"}


@pytest.fixture
def station(tmp_path):
    folder = tmp_path / "station"
    folder.mkdir()
    (folder / "main.py").write_text(STATION_MAIN)
    (folder / "manifest.json").write_text(json.dumps({"packages": ["umqtt.simple"]}))
    return folder


@pytest.mark.sim(time="fast")
def test_a_firmware_built_in_tmp_path_with_its_own_config_file_and_topics(station, sim, start_firmware, telemetry):
    sim.adc(34).set(0.75)  # within the 0 dB range the firmware leaves the ADC at (up to ~0.95 V)
    device = start_firmware(firmware=station, files={"station.json": STATION_JSON},
                            topics={"reading": "stations/{client_id}/reading", "status": "stations/{client_id}/status"},
                            extra={"every": 120})
    assert device.topic("reading") == f"stations/{device.client_id}/reading"
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"up", timeout=15)
    readings = telemetry.collect(3, device.topic("reading"), timeout=30)
    assert [r.json()["n"] for r in readings] == [1, 2, 3]
    assert readings[0].json()["uv"] == pytest.approx(750_000, abs=2_000)
    telemetry.assert_rate(device.topic("reading"), every=120, tolerance=0.01, clock="board")
    device.run.stop()
    written = json.loads(device.board.get("station.json"))
    assert written["port"] == telemetry.broker.port and written["every"] == 120  # typed, not "120"


@pytest.mark.sim(time="fast")
def test_the_manifest_names_config_files_and_topics_and_is_read_at_start(station, sim, start_firmware, telemetry):
    firmware = Firmware(station)
    # Changed after the Firmware was made: the deploy reads it again.
    (station / "manifest.json").write_text(json.dumps({
        "packages": ["umqtt.simple"],
        "config_files": {"station.json": STATION_JSON},
        "topics": {"reading": "stations/{client_id}/reading"},
    }))
    device = start_firmware(firmware=firmware, client_id="st-7", extra={"every": 30})
    assert device.topic("reading") == "stations/st-7/reading"
    assert telemetry.expect("stations/st-7/reading", timeout=15).json()["n"] == 1


def endpoints(**overrides):
    values = dict(host="10.0.0.2", port=1884, client_id="dev-1", user="u", password=Secret("broker-pw-123"),
                  wifi_ssid="lab", wifi_password=Secret("wifi-pw-456"), extra={"every": 60})
    values.update(overrides)
    return Endpoints(**values)


def test_templates_in_json_keep_types_and_text_templates_format():
    cfg = json.loads(render("c.json", {"h": "{host}", "p": "{port}", "url": "mqtt://{host}:{port}",
                                       "n": ["{every}", 5], "fixed": True}, endpoints()))
    assert cfg == {"h": "10.0.0.2", "p": 1884, "url": "mqtt://10.0.0.2:1884", "n": [60, 5], "fixed": True}
    module = render("secrets.py", "SSID = {wifi_ssid!r}\nPASSWORD = {wifi_password!r}\n", endpoints()).decode()
    assert module == "SSID = 'lab'\nPASSWORD = 'wifi-pw-456'\n"  # the board's file gets the real value
    assert render("raw.bin", b"\x00\x01", endpoints()) == b"\x00\x01"
    assert render("id.txt", lambda v: v["client_id"].upper(), endpoints()) == b"DEV-1"


def test_an_unknown_placeholder_names_the_file_and_the_known_ones():
    with pytest.raises(FirmwareError, match=r"config file station.json: unknown placeholder \{mqtt_host\}; "
                                            r"known: client_id, cloud_url, every, host"):
        render("station.json", {"broker": "{mqtt_host}"}, endpoints())


def test_endpoints_and_their_values_print_without_passwords():
    shown = repr(endpoints()) + repr(endpoints().values())
    assert "broker-pw-123" not in shown and "wifi-pw-456" not in shown


def test_a_topic_template_with_an_unknown_placeholder_is_one_line(station, board):
    from micropython_hil import Device

    device = Device(board, Firmware(station), None, "dev-1", "hil/dev-1", topics={"x": "a/{device_id}"})
    with pytest.raises(FirmwareError, match=r"topic 'x' = 'a/\{device_id\}': unknown placeholder"):
        device.topic("x")


@pytest.mark.sim(time="fast")
def test_a_firmware_with_its_own_client_id_is_named_when_board_time_is_missing(station, sim, start_firmware,
                                                                                telemetry):
    own = {**STATION_JSON, "id": "st-own-id"}  # the firmware's id is its own, not the harness's
    device = start_firmware(firmware=station, files={"station.json": own}, extra={"every": 60})
    telemetry.collect(3, "stations/st-own-id/reading", timeout=30)
    with pytest.raises(TelemetryError, match=rf"published by client id 'st-own-id', but the board clock is attached "
                                             rf"for '{device.client_id}'.*client_id='st-own-id'"):
        telemetry.assert_rate("stations/st-own-id/reading", every=60, clock="board")


def test_a_firmware_that_crashes_at_boot_fails_a_telemetry_wait_at_once_with_its_traceback(station, start_firmware,
                                                                                          telemetry):
    """Its messages will never come: the wait fails with the firmware's own error as soon as the
    run ends, not when its 30 s run out."""
    device = start_firmware(firmware=station, files={"station.json": {"broker": "{host}"}},  # no "id"
                            topics={"reading": "stations/{client_id}/reading"})
    began = time.monotonic()
    with pytest.raises(BoardException, match=r"KeyError: id") as failure:
        telemetry.collect(1, "stations/#", timeout=30)
    assert time.monotonic() - began < 10, "the wait ran on after the firmware had ended"
    assert 'File "main.py"' in str(failure.value)
    device.console.expect("KeyError: id")  # the console has it too
