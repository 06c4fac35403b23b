"""Home-automation node scenarios: commands and replies, malformed input, the button, and relay
state that survives a reboot."""

import pytest

pytestmark = pytest.mark.firmware("firmware_under_test/home_automation")

RELAY_PINS = (26, 27)
BUTTON_PIN = 25


def command(telemetry, device, payload, request_id):
    """Send one command and return the node's reply to it (matched by id)."""
    if isinstance(payload, dict):
        payload = dict(payload, id=request_id)
    return telemetry.request(device.topic("cmd"), payload, device.topic("reply"),
                             where=lambda m: m.json().get("id") == request_id, timeout=10).json()


def online(telemetry, device):
    telemetry.expect(device.topic("status"), where=lambda m: m.payload == b"online", timeout=15)


def test_commands_switch_relays_and_get_replies(board, start_firmware, telemetry, firmware):
    device = start_firmware()
    online(telemetry, device)
    reply = command(telemetry, device, {"op": "set", "relay": 1, "state": True}, "c1")
    assert reply == {"id": "c1", "ok": True, "relays": [False, True]}
    telemetry.validate([telemetry.expect(device.topic("reply"), where={"id": "c1"})], firmware.schema("reply"))
    if board.sim is not None:
        board.sim.sync()  # pin changes travel the control channel, the reply travels MQTT
        assert board.sim.pin(RELAY_PINS[1]).level == 1 and board.sim.pin(RELAY_PINS[0]).level == 0
    assert command(telemetry, device, {"op": "toggle", "relay": 0}, "c2")["relays"] == [True, True]
    state = telemetry.expect(device.topic("state"), where={"relays": [True, True]}, timeout=10)
    telemetry.validate([state], firmware.schema("state"))
    telemetry.assert_retained(device.topic("state"), {"relays": [True, True]})


MALFORMED = [
    (b"not json at all", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b"[1, 2, 3]", "command must be a JSON object"),
    (b'{"op": "explode"}', "unknown op"),
    (b'{"op": "set", "relay": 7, "state": true}', "relay must be an integer"),
    (b'{"op": "set", "relay": "0", "state": true}', "relay must be an integer"),
    (b'{"op": "set", "relay": 0, "state": "on"}', "state must be true or false"),
    (b'{"op": "ping", "pad": "' + b"x" * 600 + b'"}', "command too long"),
    (b"", "not valid JSON"),
]


def test_malformed_commands_get_error_replies_and_the_node_survives(board, start_firmware, telemetry, firmware):
    device = start_firmware()
    online(telemetry, device)
    for payload, error in MALFORMED:
        mark = telemetry.mark()
        telemetry.publish(device.topic("cmd"), payload)
        reply = telemetry.expect(device.topic("reply"), since=mark, timeout=10)
        telemetry.validate([reply], firmware.schema("reply"))
        assert reply.json()["ok"] is False and error in reply.json()["error"], (payload, reply.json())
    assert command(telemetry, device, {"op": "ping"}, "alive")["pong"] is True
    assert "Traceback" not in board.console.text


@pytest.mark.requires_sim
def test_button_press_toggles_relay_zero(sim, start_firmware, telemetry):
    device = start_firmware()
    online(telemetry, device)
    sim.pin(BUTTON_PIN).pulse(0)  # pressed: pulled-up input goes low, then released
    telemetry.expect(device.topic("state"), where={"relays": [True, False]}, timeout=10)
    sim.sync()
    assert sim.pin(RELAY_PINS[0]).level == 1
    device.console.expect("button: relay 0 on")


def test_relay_state_survives_a_reboot(board, start_firmware, telemetry):
    device = start_firmware()
    online(telemetry, device)
    command(telemetry, device, {"op": "set", "relay": 0, "state": True}, "before")
    device.run.stop()
    board.reset(hard=True)
    mark = telemetry.mark()
    device = start_firmware(client_id=device.client_id)
    telemetry.expect(device.topic("state"), where={"relays": [True, False]}, since=mark, timeout=15)
    if board.sim is not None:
        board.sim.sync()
        assert board.sim.pin(RELAY_PINS[0]).level == 1
    assert command(telemetry, device, {"op": "get"}, "after")["relays"] == [True, False]
