"""Industrial monitor scenarios: threshold alarms with hysteresis over MQTT, and the statistics
it uploads to the HTTP endpoint (kept and retried while the endpoint fails)."""

import jsonschema
import pytest

pytestmark = pytest.mark.firmware("firmware_under_test/industrial_monitor")


@pytest.mark.requires_sim
def test_alarms_follow_the_signal_with_hysteresis(sim, start_firmware, telemetry, firmware):
    sim.adc(36).set(1.0)
    device = start_firmware(extra={"high_mv": 2000, "hysteresis_mv": 300})
    topic = device.topic("alarm")
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    sim.adc(36).set(2.5)
    assert telemetry.expect(topic, schema=firmware.schema("alarm"), timeout=5).json()["state"] == "high"
    mark = telemetry.mark()
    sim.adc(36).set(1.85)  # below the threshold but inside the hysteresis band: still an alarm
    telemetry.expect_none(topic, since=mark, within=0.5)
    sim.adc(36).set(1.5)
    cleared = telemetry.expect(topic, since=mark, timeout=5).json()
    assert cleared["state"] == "normal" and cleared["value_mv"] < 1700
    assert telemetry.assert_sequence(topic) == [1, 2]


def test_statistics_upload_contents(board, cloud, start_firmware, firmware):
    if board.sim is not None:
        board.sim.adc(36).set(1.2)
    start_firmware(cloud=cloud, extra={"batch_s": 1, "rate_hz": 200})
    uploads = cloud.wait_for(2, path="/stats", method="POST", timeout=20)
    schema = firmware.schema("stats")
    for request in uploads:
        assert request.headers.get("Content-Type", "").startswith("application/json")
        jsonschema.validate(request.json(), schema)
    batch = uploads[0].json()["batches"][0]
    assert 50 <= batch["samples"] <= 250, f"1 s at 200 Hz, got {batch['samples']} samples"
    if board.sim is not None:
        assert batch["mean_mv"] == pytest.approx(1200, abs=15)


def test_statistics_are_kept_while_the_endpoint_fails(board, cloud, start_firmware):
    if board.sim is not None:
        board.sim.adc(36).set(1.2)
    cloud.respond("/stats", method="POST", status=503, times=2)
    start_firmware(cloud=cloud, extra={"batch_s": 1, "rate_hz": 200})
    requests = cloud.wait_for(3, path="/stats", method="POST", timeout=30)
    rejected, accepted = requests[:2], requests[2]
    batches = accepted.json()["batches"]
    assert len(batches) >= 3, "the batches refused with 503 must be sent again"
    assert batches[: len(rejected[1].json()["batches"])] == rejected[1].json()["batches"]
    board.console.expect("upload rejected: HTTP 503")
