"""Firmware folders: validation, staging (includes, packages), deploy with the config file."""

import json

import pytest

from micropython_hil.board.board import Board
from micropython_hil.errors import FirmwareError
from micropython_hil.deploy.firmware import Firmware

REFERENCE = ["weather_station", "home_automation", "industrial_monitor"]


def test_missing_folder_and_missing_main_py_are_named(tmp_path):
    with pytest.raises(FirmwareError, match=r"firmware folder .*/nope does not exist"):
        Firmware(tmp_path / "nope")
    with pytest.raises(FirmwareError, match=r"has no main\.py"):
        Firmware(tmp_path)


def test_bad_manifest_and_include_are_named(tmp_path):
    (tmp_path / "main.py").write_text("")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(FirmwareError, match="manifest.json: not valid JSON"):
        Firmware(tmp_path)
    (tmp_path / "manifest.json").write_text('{"include": ["../nowhere"]}')
    with pytest.raises(FirmwareError, match="include .*nowhere is not a folder"):
        Firmware(tmp_path)


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_firmware_stages_with_its_libraries_and_schemas(name, tmp_path):
    fw = Firmware(f"firmware_under_test/{name}")
    staged = fw.stage(tmp_path)
    files = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    assert {"main.py", "app.py", "lib/link.py", "lib/settings.py", "lib/umqtt/simple.py"} <= files
    assert not any(f.startswith("schemas/") or f == "manifest.json" for f in files)
    schemas = list((fw.path / "schemas").glob("*.json"))
    assert schemas and all(fw.schema(p.stem)["$schema"] for p in schemas)
    with pytest.raises(FirmwareError, match="has no schema 'nope' \\(known: "):
        fw.schema("nope")


def test_deploy_writes_the_config_and_compiles_on_the_board():
    fw = Firmware("firmware_under_test/home_automation")
    config = {"version": 1, "mqtt": {"host": "127.0.0.1", "port": 1883, "user": None, "password": None,
                                     "client_id": "home-1", "keepalive": 30},
              "wifi": None, "http": None, "topic_prefix": "home/1", "extra": {}}
    with Board.unix() as board:
        first = fw.deploy(board, config)
        assert "lib/umqtt/simple.py" in first.uploaded
        assert json.loads(board.get("hil_config.json")) == config
        # every module parses with MicroPython's own compiler
        for path in ["app.py", "lib/link.py", "lib/settings.py"]:
            board.exec(f"compile(open({path!r}).read(), {path!r}, 'exec')")
        assert fw.deploy(board, config).uploaded == []


def test_a_schema_that_is_not_json_is_one_line_naming_the_file(tmp_path):
    from micropython_hil import Firmware, FirmwareError

    (tmp_path / "main.py").write_text("")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "reading.json").write_text('{"type": "object",,}')
    with pytest.raises(FirmwareError) as caught:
        Firmware(tmp_path).schema("reading")
    message = str(caught.value)
    assert message.startswith(f"schema file {tmp_path / 'schemas' / 'reading.json'} is not valid JSON: line 1")
    assert "\n" not in message and caught.value.__cause__ is None
