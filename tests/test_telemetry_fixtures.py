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


def test_broker_address_properties_logging_and_short_failures(pytester):
    pytester.makepyfile(test_obs="""
        def test_logged(broker, telemetry):
            telemetry.publish("obs/t", b"hello")
            telemetry.expect("obs/t")

        def test_fails(telemetry):
            telemetry.assert_rate("obs/none", every=1)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml", "out.xml", "--log-cli-level=INFO",
                                           "--hil-artifacts", "arts", timeout=120)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*INFO*micropython_hil.telemetry*obs/t q1 hello*"])  # logged live
    result.stdout.fnmatch_lines(["hil broker: mqtt://127.0.0.1:*(watch: mosquitto_sub -h 127.0.0.1 -p * -t '#' -v)*"])
    failure = result.stdout.str().split("test_fails")[1]
    assert "telemetry.py" not in failure  # the harness's frames are hidden: the test's line shows
    xml = (pytester.path / "out.xml").read_text()
    assert 'name="hil messages recorded" value="1"' in xml and 'name="hil broker" value="mqtt://127.0.0.1:' in xml
    assert (pytester.path / "arts" / "test_obs.py_test_logged" / "broker.txt").read_text().startswith("mqtt://")
