"""Industrial monitor scenarios: threshold alarms with hysteresis over MQTT, and the statistics
it uploads to the HTTP endpoint (kept and retried while the endpoint fails).

What the firmware promises, each at its boundary: the documented defaults (1 kHz, alarm above
2200 mV, cleared below 2000 mV, a batch every 10 s, 8 batches kept), the filtered value an alarm
reports, alarms raised while the broker is away arriving in order, statistics that are exact,
uploads that count as delivered only on a 2xx answer, the oldest batches dropped when too many
wait, a dead endpoint survived, the session kept alive between batches."""

import jsonschema
import pytest

pytestmark = pytest.mark.firmware("firmware_under_test/industrial_monitor")


def filtered_crossing(start_mv: int, level_mv: int, alpha: float, high_mv: int) -> int:
    """The documented filter (an EMA in 1/256ths, alpha in 1/256ths, rounded to mV), settled at
    start_mv, then fed level_mv: the first filtered value above high_mv, the one the alarm reports."""
    alpha_q, f = int(alpha * 256), start_mv << 8
    while True:
        f += (alpha_q * ((level_mv << 8) - f)) >> 8
        v = (f + 128) >> 8
        if v > high_mv:
            return v


def status_board_s(sim, device, payload=b"online", after_s=0.0) -> float:
    """Board seconds at which the device published this status (the simulator's record)."""
    topic = device.topic("status")

    def found():
        return [p.board_time_us / 1e6 for p in list(sim.publishes)
                if p.topic == topic and p.payload_len == len(payload) and p.board_time_us / 1e6 >= after_s]

    # The simulator's record of a publish comes over its own channel: wait for it.
    assert sim.wait_until(lambda: found(), timeout=10), f"the board published no {payload!r} on {topic}"
    return found()[0]


@pytest.mark.requires_sim
def test_alarms_follow_the_signal_with_hysteresis(sim, start_firmware, telemetry, firmware):
    sim.adc(36).set(1.0)
    device = start_firmware(extra={"high_mv": 2000, "hysteresis_mv": 300})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("alarm")
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    sim.adc(36).set(2.5)
    raised = telemetry.expect(topic, schema=firmware.schema("alarm"), timeout=5)
    assert raised.json()["state"] == "high" and raised.qos == 1
    mark = telemetry.mark()
    sim.adc(36).set(1.85)  # below the threshold but inside the hysteresis band: still an alarm
    telemetry.expect_none(topic, since=mark, within=0.5)
    sim.adc(36).set(1.5)
    cleared = telemetry.expect(topic, since=mark, timeout=5).json()
    assert cleared["state"] == "normal" and cleared["value_mv"] < 1700
    assert telemetry.assert_sequence(topic) == [1, 2]


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_the_alarm_threshold_and_its_hysteresis_at_their_boundaries(sim, start_firmware, telemetry, wait_board):
    """Defaults: an alarm above 2200 mV, not at it; cleared below 2000 mV, not at it. The filter
    reads a steady level exactly, from above and from below. No HTTP endpoint: nothing to upload,
    and the node lives on through its batches."""
    sim.adc(36).set(2.2)
    device = start_firmware()
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("alarm")
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    wait_board(2)
    telemetry.expect_none(topic, within=0.3)  # exactly at high_mv: no alarm
    sim.adc(36).set(2.201)  # 1 mV over, reached from below
    raised = telemetry.expect(topic, timeout=10).json()
    assert (raised["state"], raised["value_mv"], raised["seq"]) == ("high", 2201, 1)
    mark = telemetry.mark()
    sim.adc(36).set(2.0)  # down to exactly high_mv - hysteresis_mv: still an alarm
    wait_board(2)
    telemetry.expect_none(topic, since=mark, within=0.3)
    sim.adc(36).set(1.999)
    cleared = telemetry.expect(topic, since=mark, timeout=10).json()
    assert (cleared["state"], cleared["value_mv"], cleared["seq"]) == ("normal", 1999, 2)
    wait_board(25)  # past two batch closes without an endpoint
    assert device.run.running and "Traceback" not in device.console.text


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
@pytest.mark.parametrize("alpha", [None, 0.9], ids=["default-alpha", "alpha-0.9"])
def test_an_alarm_reports_the_filtered_value_where_it_crossed(sim, start_firmware, telemetry, wait_board, alpha):
    sim.adc(36).set(1.0)
    extra = {"high_mv": 1500, "hysteresis_mv": 100, **({"alpha": alpha} if alpha else {})}
    device = start_firmware(extra=extra)
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("alarm")
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    wait_board(1)  # sampling (it starts once online) has settled on 1000 mV
    sim.adc(36).set(2.0)
    raised = telemetry.expect(topic, timeout=10).json()
    assert raised["value_mv"] == filtered_crossing(1000, 2000, alpha or 0.2, 1500), raised


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_defaults_sample_at_1khz_and_upload_every_ten_seconds(sim, cloud, start_firmware, telemetry, firmware):
    sim.adc(36).set(1.2)
    device = start_firmware(cloud=cloud)
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    uploads = cloud.wait_for(4, path="/stats", method="POST", timeout=15)
    batches = [u.json()["batches"] for u in uploads]
    for request, sent in zip(uploads, batches):
        assert request.headers.get("Content-Type", "").startswith("application/json")
        jsonschema.validate(request.json(), firmware.schema("stats"))
        assert len(sent) == 1, "a delivered batch is not sent again"
    stamps = [b[0]["t_ms"] for b in batches]
    # One batch every 10 s of board time, each of 10 s at 1 kHz (less the upload's few ms). The
    # board's clock runs on while a busy host keeps this board's process from a CPU, which can
    # delay a batch's close: the shortest of the gaps is the period.
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert 9999 <= min(gaps) <= 10002 and max(gaps) <= 10500, stamps
    samples = [b[0]["samples"] for b in batches[1:]]
    assert 9000 <= min(samples) and max(samples) <= 10001, samples
    for sent in batches:
        assert (sent[0]["mean_mv"], sent[0]["min_mv"], sent[0]["max_mv"], sent[0]["alarms"]) == (1200, 1200, 1200, 0)
    # Online at boot, before any batch closes; the watchdog fed all along.
    assert status_board_s(sim, device) < 1.0
    assert not sim.resets and "rst:" not in device.console.text


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_statistics_are_exact_at_a_low_rate(sim, cloud, start_firmware):
    """Five samples a second of a steady 1.2 V: each batch's mean, min and max are 1200 mV exactly."""
    sim.adc(36).set(1.2)
    device = start_firmware(cloud=cloud, extra={"batch_s": 1, "rate_hz": 5})
    device.console.expect(r"link: online", timeout=15)
    uploads = cloud.wait_for(4, path="/stats", method="POST", timeout=15)
    for request in uploads:
        (batch,) = request.json()["batches"]
        assert 4 <= batch["samples"] <= 6
        assert (batch["mean_mv"], batch["min_mv"], batch["max_mv"]) == (1200, 1200, 1200), batch


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_statistics_follow_a_changing_signal(sim, cloud, start_firmware):
    """A ramp sampled 7 times a second: means to one decimal, min below max, the ramp's way."""
    from micropython_hil import Signal

    sim.adc(36).set(Signal.ramp(0.5, 2.0, 60))
    device = start_firmware(cloud=cloud, extra={"batch_s": 1, "rate_hz": 7, "high_mv": 3000})
    device.console.expect(r"link: online", timeout=15)
    uploads = cloud.wait_for(6, path="/stats", method="POST", timeout=15)
    batches = [r.json()["batches"][0] for r in uploads[1:]]
    for b in batches:
        assert b["min_mv"] < b["mean_mv"] < b["max_mv"], b
        assert round(b["mean_mv"], 1) == b["mean_mv"], f"mean not rounded to 0.1 mV: {b}"
    assert any(b["mean_mv"] != int(b["mean_mv"]) for b in batches), batches
    assert [b["max_mv"] for b in batches] == sorted(b["max_mv"] for b in batches)


def test_statistics_upload_contents(board, cloud, start_firmware, firmware):
    if board.sim is not None:
        board.sim.adc(36).set(1.2)
    device = start_firmware(cloud=cloud, extra={"batch_s": 1, "rate_hz": 200})
    device.console.expect(r"link: online", timeout=15)
    uploads = cloud.wait_for(2, path="/stats", method="POST", timeout=20)
    schema = firmware.schema("stats")
    for request in uploads:
        assert request.headers.get("Content-Type", "").startswith("application/json")
        jsonschema.validate(request.json(), schema)
    batch = uploads[0].json()["batches"][0]
    assert 50 <= batch["samples"] <= 250, f"1 s at 200 Hz, got {batch['samples']} samples"
    if board.sim is not None:
        assert batch["mean_mv"] == pytest.approx(1200, abs=15)


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_only_a_2xx_answer_delivers_a_batch(sim, cloud, start_firmware):
    """404 is a refusal (the batch is kept and sent again); 299 and 200 are deliveries."""
    sim.adc(36).set(1.2)
    cloud.respond("/stats", method="POST", status=200)
    cloud.respond("/stats", method="POST", status=299, times=1)
    cloud.respond("/stats", method="POST", status=404, times=1)
    device = start_firmware(cloud=cloud, extra={"batch_s": 1, "rate_hz": 20})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    refused, accepted, after, last = [r.json()["batches"] for r in
                                      cloud.wait_for(4, path="/stats", method="POST", timeout=15)[:4]]
    assert len(refused) == 1 and len(accepted) == 2 and accepted[0] == refused[0]
    assert len(after) == 1 and after[0]["t_ms"] > accepted[1]["t_ms"]
    assert len(last) == 1 and last[0]["t_ms"] > after[0]["t_ms"]
    device.console.expect("upload rejected: HTTP 404")


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_a_failing_endpoint_keeps_the_newest_eight_batches(sim, cloud, start_firmware):
    """Eleven refused uploads: the next accepted one carries the newest 8 batches, in order."""
    sim.adc(36).set(1.2)
    cloud.respond("/stats", method="POST", status=503, times=11)
    device = start_firmware(cloud=cloud, extra={"batch_s": 1, "rate_hz": 20})
    device.console.expect(r"link: online", timeout=15)
    requests = cloud.wait_for(12, path="/stats", method="POST", timeout=15)
    sizes = [len(r.json()["batches"]) for r in requests]
    assert sizes == [1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 8], sizes
    kept, last_refused = requests[11].json()["batches"], requests[10].json()["batches"]
    assert kept[:-1] == last_refused[1:], "the oldest batch goes, the others stay in order"
    stamps = [b["t_ms"] for b in kept]
    assert stamps == sorted(stamps) and all(900 <= b - a <= 1100 for a, b in zip(stamps, stamps[1:])), stamps


def test_statistics_are_kept_while_the_endpoint_fails(board, cloud, start_firmware):
    if board.sim is not None:
        board.sim.adc(36).set(1.2)
    cloud.respond("/stats", method="POST", status=503, times=2)
    device = start_firmware(cloud=cloud, extra={"batch_s": 1, "rate_hz": 200})
    device.console.expect(r"link: online", timeout=15)
    requests = cloud.wait_for(3, path="/stats", method="POST", timeout=30)
    rejected, accepted = requests[:2], requests[2]
    batches = accepted.json()["batches"]
    assert len(batches) >= 3, "the batches refused with 503 must be sent again"
    assert batches[: len(rejected[1].json()["batches"])] == rejected[1].json()["batches"]
    board.console.expect("upload rejected: HTTP 503")


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_an_endpoint_that_drops_or_answers_oddly_is_survived(sim, cloud, start_firmware):
    """A dropped connection, and a 300 without Location (which urequests cannot follow): the
    uploads fail, the batches are kept for the next one, the sampling goes on."""
    sim.adc(36).set(1.2)
    cloud.respond("/stats", method="POST", drop=True, times=1)
    cloud.respond("/stats", method="POST", status=300, times=1)
    device = start_firmware(cloud=cloud, extra={"batch_s": 1, "rate_hz": 20})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    requests = cloud.wait_for(4, path="/stats", method="POST", timeout=15)
    sizes = [len(r.json()["batches"]) for r in requests]
    assert sizes == [1, 2, 3, 1], sizes  # none lost while the uploads failed
    device.console.expect("upload failed:")
    assert "Traceback" not in device.console.text and device.run.running


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_alarms_raised_while_the_broker_is_away_arrive_in_order(sim, netfault, start_firmware, telemetry, wait_board):
    sim.adc(36).set(1.0)
    # Long batches: the only way back online between them is the alarm's own reconnect.
    device = start_firmware(via=netfault, extra={"batch_s": 1000})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    topic = device.topic("alarm")
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    mark = telemetry.mark()
    with netfault.refuse():
        netfault.cut()  # unnoticed until the first alarm's publish fails (no poll for 1000 s)
        for level in (2.4, 1.0, 2.4):
            sim.adc(36).set(level)
            wait_board(1)
        device.console.expect("link: down", timeout=15)
    ended_s = wait_board(0)
    alarms = telemetry.collect(3, topic, since=mark, timeout=15)
    assert [(a.json()["seq"], a.json()["state"]) for a in alarms] == [(1, "high"), (2, "normal"), (3, "high")]
    assert all(a.qos == 1 for a in alarms)
    # Back by its own reconnect (backoff, at most a minute), not at the next batch 1000 s away.
    assert status_board_s(sim, device, after_s=ended_s) - ended_s < 90


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_the_session_stays_alive_between_batches(sim, start_firmware, telemetry):
    """Keepalive 1 s, in wall time at the broker: the monitor pings at its batch closes, so it is
    never dropped, and an alarm after a few quiet seconds goes out on the first connection."""
    import time

    sim.adc(36).set(1.0)
    device = start_firmware(keepalive=1, extra={"batch_s": 1})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    time.sleep(2)  # past 1.5 x keepalive, when the broker drops a silent client
    sim.adc(36).set(2.4)
    telemetry.expect(device.topic("alarm"), where={"state": "high"}, timeout=10)
    assert "connect #2" not in device.console.text and "link: down" not in device.console.text
    telemetry.expect_none(device.topic("status"), where=lambda m: m.payload == b"offline", within=0)


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_an_alarm_whose_send_fails_is_sent_again(sim, netfault, start_firmware, telemetry):
    """The connection dies unnoticed (no poll between 1000 s batches); the alarm's publish is
    what finds out. That alarm is kept and goes out once the link is back, not lost."""
    sim.adc(36).set(1.0)
    device = start_firmware(via=netfault, extra={"batch_s": 1000})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    netfault.cut()
    sim.adc(36).set(2.4)
    device.console.expect("link: down", timeout=15)
    alarm = telemetry.expect(device.topic("alarm"), timeout=15).json()
    assert (alarm["seq"], alarm["state"]) == (1, "high"), alarm
    device.console.expect(r"link: online \(connect #2\)", timeout=15)


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_the_monitor_comes_back_online_without_waiting_for_an_alarm(sim, netfault, start_firmware, telemetry):
    """After a cut the monitor reconnects at its next batch close, alarm or not: its status is
    "online" again and retained, and the broker published its last will meanwhile."""
    sim.adc(36).set(1.0)
    device = start_firmware(via=netfault, extra={"batch_s": 1})
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)
    mark = telemetry.mark()
    netfault.cut()
    device.console.expect("link: down", timeout=15)
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"offline", since=mark, timeout=15)
    device.console.expect(r"link: online \(connect #2\)", timeout=15)
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", since=mark, timeout=15)
    telemetry.assert_retained(device.topic("status"), "online")
    telemetry.expect_none(device.topic("alarm"), within=0)
