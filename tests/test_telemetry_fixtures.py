"""The pytest fixtures (broker, telemetry, cloud, micropython_mqtt) in a real pytest run."""

from __future__ import annotations

import json


CONFTEST = """
import pytest

@pytest.fixture
def hil_artifacts(request):
    return request.config.rootpath / "artifacts" / request.node.name
"""

TEST = """
import urllib.request

def test_device(broker, telemetry, cloud, micropython_mqtt):
    script = 'c = connect("dev-fx")\\nc.publish(b"fx/t", b"hi", False, 1)\\nc.disconnect()\\n'
    assert micropython_mqtt(script, broker=broker).wait(10) == 0
    assert telemetry.expect("fx/t").client_id == "dev-fx"
    urllib.request.urlopen(cloud.url + "/x", timeout=2).read()
    assert cloud.wait_for(path="/x")

def test_second_uses_same_session_broker(broker, telemetry):
    telemetry.publish("fx/again", "x")
    telemetry.expect("fx/again")
"""


def test_fixtures_record_and_save_traffic_per_test(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_fx=TEST)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--broker-scope", "function")
    result.assert_outcomes(passed=2)
    saved = pytester.path / "artifacts" / "test_device" / "telemetry.jsonl"
    records = [json.loads(line) for line in saved.read_text().splitlines()]
    assert [(r["topic"], r["payload"], r["client_id"]) for r in records] == [("fx/t", "hi", "dev-fx")]


def test_unknown_broker_option_is_a_usage_error(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_fx="def test_x(broker):\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--broker", "bogus")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*UsageError: --broker 'bogus': expected amqtt, mosquitto or*"])
