"""--broker-tls through the plugin: the options reach the broker and the board, and a failing
run's whole output and artifacts hold no private key (they are grepped for the keys made in it)."""

from pathlib import Path

INNER_TESTS = """
import json
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _keep_keys(broker):
    yield
    # Every key made in this run, where the parent test can grep for it (written after the test,
    # so the devices' keys are in too).
    tls = broker.tls
    keys = [tls.server_key_file.read_text()] + [p.read_text() for p in tls.dir.glob("client-*.key")]
    with open("keys.txt", "a") as f:
        f.write("\\n".join(keys) + "\\n")


def test_the_options_reach_the_broker(broker):
    assert broker.tls.mutual and broker.url.startswith("mqtts://")


def test_shows_the_broker_and_a_certificate(broker):
    cert = broker.tls.client_cert("shown")
    assert broker is None, (broker, cert, broker.tls)


def test_bad_keepalive_with_tls(start_firmware):
    start_firmware(keepalive=-1)


def test_fails_with_firmware_running_over_tls(board, start_firmware):
    device = start_firmware(files={"station.json": {"key": "{tls_key}", "ca": "{tls_ca}"}})
    config = json.loads(board.get("hil_config.json"))
    assert config["mqtt"]["tls"]["key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert json.loads(board.get("station.json"))["key"] == config["mqtt"]["tls"]["key"]
    assert device is None, (device, config)
"""


def test_a_failing_tls_run_prints_no_private_key(pytester):
    firmware = pytester.mkdir("fw")
    (firmware / "main.py").write_text("import time\nwhile True:\n    time.sleep(1)\n")
    pytester.makepyfile(test_leaky=INNER_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-l", "--tb=long", "-rA", "-vv", "--firmware", str(firmware),
        "--broker-tls", "mutual", "--hil-artifacts", "arts", timeout=120)
    result.assert_outcomes(passed=1, failed=3)
    blocks = (pytester.path / "keys.txt").read_text().split("-----END PRIVATE KEY-----")
    keys = list(dict.fromkeys(block.strip() for block in blocks if "PRIVATE KEY" in block))
    assert len(keys) >= 4  # the server's, the harness's, "shown", the devices'
    # 16-character pieces of every key's lines (a leak of any 31 characters in a row shows),
    # less those two keys share: the encoding's structure (EC P-256's algorithm identifier), which
    # certificates hold too.
    pieces = [{line[i:i + 16] for line in key.splitlines()[1:] for i in range(0, len(line) - 15, 16)} for key in keys]
    chunks = {c for mine in pieces for c in mine if sum(c in other for other in pieces) == 1}
    output = "\n".join(result.outlines + result.errlines)
    artifacts = "\n".join(p.read_text(errors="replace") for p in Path(pytester.path / "arts").rglob("*")
                          if p.is_file())
    assert "ClientCert 'shown'" in output and "***" in output  # shown, the key masked
    for where, text in (("output", output), ("artifacts", artifacts)):
        assert "PRIVATE KEY" not in text, f"a private key in the {where}"
        leaked = [chunk for chunk in chunks if chunk in text]
        assert not leaked, f"key material in the {where}: {len(leaked)} pieces of the keys"


def test_tls_option_errors_name_the_option(pytester):
    pytester.makepyfile(test_one="def test_one(broker):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--broker-tls", "both")
    assert result.ret != 0
    assert "--broker-tls" in result.stderr.str() and "server" in result.stderr.str()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--broker-tls", "server",
                                           "--broker-ca", "ca.pem")
    assert result.ret != 0
    assert "--broker-ca is for an external --broker" in result.stdout.str() + result.stderr.str()
