"""The docker fixtures and options as users meet them: pytest in a subprocess on a test file."""

from __future__ import annotations

import subprocess

import pytest

CONFTEST = """
import pytest
from micropython_hil.plugin.docker import start_docker_broker

@pytest.fixture
def broker(pytestconfig):
    # what the broker fixture does for --broker docker:IMAGE
    started = start_docker_broker(pytestconfig)
    yield started
    started.stop()
"""

TEST = """
def test_traffic(broker, telemetry, docker_engine):
    assert broker.kind == "docker" and broker.credentials[0] == "dev" and str(broker.credentials[1]) == "***"
    with broker.client() as client:
        client.publish("plug/in", b"1", qos=1)
    telemetry.expect("plug/in", timeout=5)
    print("CONTAINER", broker.name)
"""


def test_broker_options_start_the_image_with_the_tests_files_and_credentials(
        pytester, docker_mosquitto_image, docker_engine, monkeypatch):
    (pytester.path / "auth.conf").write_text("listener 1883 0.0.0.0\nallow_anonymous false\n"
                                             "password_file /mosquitto/config/passwd\n")
    (pytester.path / "passwd").write_text("dev:from-the-environment\n")
    subprocess.run(["mosquitto_passwd", "-U", str(pytester.path / "passwd")], check=True)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_plugged=TEST)
    monkeypatch.setenv("HIL_BROKER_PASSWORD", "from-the-environment")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", f"--broker=docker:{docker_mosquitto_image}",
        "--broker-files=/mosquitto/config/mosquitto.conf=auth.conf,/mosquitto/config/passwd=passwd",
        "--broker-user=dev", timeout=120)
    result.assert_outcomes(passed=1)
    name = next(line.split("CONTAINER ")[1].split()[0] for line in result.outlines if "CONTAINER " in line)
    assert not docker_engine.client.containers.list(all=True, filters={"name": f"^/{name}$"})
    assert "from-the-environment" not in "\n".join(result.outlines + result.errlines)


def test_without_an_engine_the_tests_skip_saying_how_to_get_one(pytester, monkeypatch):
    pytester.makepyfile("def test_needs_docker(docker_engine): pass\n")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", timeout=120)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*docker engine unix:///nonexistent/docker.sock: no such socket; install Docker "
                                 "(apt-get install docker.io) and start dockerd*"])


def test_a_bad_files_option_is_a_usage_error_naming_it(pytester):
    pytester.makepyfile("def test_a(): pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--broker-files=mosquitto.conf", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--broker-files 'mosquitto.conf': expected CONTAINER_PATH=HOST_FILE*"])
