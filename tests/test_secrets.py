"""No secret in any output: a failing run's whole output and artifacts are grepped for the
passwords planted in it (WiFi from the command line, the broker's generated LAN credentials)."""

from pathlib import Path

WIFI_PASSWORD = "planted-wifi-pw-7731"

FAILING_TESTS = """
import pytest
from pathlib import Path


@pytest.fixture(autouse=True)
def _keep_password(broker):
    # The generated broker password, where the parent test can grep for it.
    Path("broker-password").write_text(broker.credentials[1].reveal())


def test_shows_the_broker(broker):
    assert broker is None, broker


def test_bad_keepalive(start_firmware):
    start_firmware(keepalive=-1)


def test_long_client_id(start_firmware):
    start_firmware(client_id="a-client-id-longer-than-23-characters")


def test_fails_with_firmware_running(start_firmware):
    device = start_firmware()
    assert device is None, device
"""


def test_a_failing_run_prints_no_planted_secret(pytester):
    firmware = pytester.mkdir("fw")
    (firmware / "main.py").write_text("import time\nwhile True:\n    time.sleep(1)\n")
    pytester.makepyfile(test_leaky=FAILING_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-l", "--tb=long", "-rA", "--firmware", str(firmware), "--broker-lan",
        "--wifi-ssid", "lab", "--wifi-password", WIFI_PASSWORD, "--hil-artifacts", "arts", timeout=120)
    result.assert_outcomes(failed=4)
    broker_password = (pytester.path / "broker-password").read_text()
    assert len(broker_password) >= 8
    output = "\n".join(result.outlines + result.errlines)
    assert "***" in output  # the secrets were there, masked
    artifacts = "\n".join(p.read_text(errors="replace") for p in Path(pytester.path / "arts").rglob("*")
                          if p.is_file())
    for secret in (WIFI_PASSWORD, broker_password):
        assert secret not in output, f"secret {secret[:3]}... printed:\n" + \
            "\n".join(line for line in result.outlines if secret in line)
        assert secret not in artifacts
