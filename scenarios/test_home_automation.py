"""Home-automation node scenarios: commands and replies, malformed input, the button, and relay
state that survives a reboot.

What the node promises, each at its boundary: one reply per command, in order, at QoS 1, under
the command's id (a refusal too); the documented refusals, word for word; a 512-byte command
taken and a 513-byte one refused; ids echoed as real text, whatever bytes they came as; relay
state retained on <prefix>/state once per change; relays that never click on at boot and come
back after a reboot; a debounced button."""

import json

import pytest

pytestmark = pytest.mark.firmware("firmware_under_test/home_automation")

RELAY_PINS = (26, 27)
BUTTON_PIN = 25


def command(telemetry, device, payload, request_id):
    """Send one command and return the node's reply to it (matched by id)."""
    if isinstance(payload, dict):
        payload = dict(payload, id=request_id)
    return telemetry.request(device.topic("cmd"), payload, device.topic("reply"),
                             where=lambda m: m.json().get("id") == request_id, timeout=5).json()


def online(telemetry, device):
    device.console.expect(r"link: online", timeout=15)  # a crash at boot fails here, at once
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
    assert command(telemetry, device, {"op": "set", "relay": 0, "state": False}, 7) == \
        {"id": 7, "ok": True, "relays": [False, True]}
    assert command(telemetry, device, {"op": "toggle", "relay": 1}, "c4")["relays"] == [False, False]
    assert command(telemetry, device, {"op": "get"}, "c5") == {"id": "c5", "ok": True, "relays": [False, False]}
    pong = command(telemetry, device, {"op": "ping"}, "c6")
    assert pong["ok"] is True and pong["pong"] is True and pong["heap_free"] > 0
    if board.sim is not None:
        board.sim.sync()
        assert [board.sim.pin(p).level for p in RELAY_PINS] == [0, 0]


def test_state_is_retained_at_boot_and_published_once_per_change(start_firmware, telemetry):
    device = start_firmware()
    online(telemetry, device)
    boot = telemetry.expect(device.topic("state"), timeout=10)
    assert boot.json() == {"relays": [False, False]} and boot.retain and boot.qos == 1
    mark = telemetry.mark()
    replies = [command(telemetry, device, {"op": "get"}, f"g{i}") for i in range(3)]
    assert all(r["relays"] == [False, False] for r in replies)
    telemetry.expect_none(device.topic("state"), since=mark, within=0.3)  # nothing changed: no state
    command(telemetry, device, {"op": "set", "relay": 1, "state": True}, "s1")
    changed = telemetry.expect(device.topic("state"), since=mark, timeout=10)
    assert changed.json() == {"relays": [False, True]} and changed.retain and changed.qos == 1
    telemetry.expect_none(device.topic("state"), since=changed, within=0.5)  # once per change


def test_replies_come_in_order_at_qos1_for_a_burst_of_commands(start_firmware, telemetry):
    device = start_firmware()
    online(telemetry, device)
    telemetry.expect(device.topic("state"), where={"relays": [False, False]}, timeout=10)  # at boot
    mark = telemetry.mark()
    expected, relays = [], [False, False]
    for i in range(21):
        telemetry.publish(device.topic("cmd"), {"id": i, "op": "toggle", "relay": i % 2})
        relays[i % 2] = not relays[i % 2]
        expected.append(list(relays))
    replies = telemetry.collect(21, device.topic("reply"), since=mark, timeout=10)
    assert [r.json()["id"] for r in replies] == list(range(21))
    assert [r.json()["relays"] for r in replies] == expected
    assert all(r.qos == 1 for r in replies)
    # The state published last (and retained) is the relays' state after the last command, also
    # when commands arrive while a state message waits for its PUBACK (umqtt takes them there).
    telemetry.expect(device.topic("state"), where={"relays": [True, False]}, since=replies[-1], timeout=5)
    telemetry.assert_retained(device.topic("state"), {"relays": [True, False]})


MALFORMED = [
    (b"not json at all", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b"[1, 2, 3]", "command must be a JSON object"),
    (b'{"op": "explode"}', "unknown op 'explode' (known: set, toggle, get, ping)"),
    # An op that is not text is shown as MicroPython's repr shows it: escaped, or as the character
    # an overlong form stands for; the reply stays valid UTF-8 either way.
    (b'{"op": "\\udc00"}', "unknown op '\\udc00' (known: set, toggle, get, ping)"),
    (b'{"op": "\xc0\xaf"}', "unknown op '/' (known: set, toggle, get, ping)"),
    (b'{"op": "set", "relay": 7, "state": true}', "relay must be an integer 0..1"),
    (b'{"op": "set", "relay": "0", "state": true}', "relay must be an integer 0..1"),
    (b'{"op": "set", "relay": 0, "state": "on"}', "state must be true or false"),
    (b'{"op": "ping", "pad": "' + b"x" * 600 + b'"}', "command too long (625 bytes, max 512)"),
    (b"", "not valid JSON"),
]


def test_malformed_commands_get_error_replies_and_the_node_survives(board, start_firmware, telemetry, firmware):
    device = start_firmware()
    online(telemetry, device)
    for payload, error in MALFORMED:
        mark = telemetry.mark()
        telemetry.publish(device.topic("cmd"), payload)
        reply = telemetry.expect(device.topic("reply"), since=mark, timeout=5)
        telemetry.validate([reply], firmware.schema("reply"))
        assert reply.json() == {"id": None, "ok": False, "error": error}, (payload, reply.json())
    assert command(telemetry, device, {"op": "ping"}, "alive")["pong"] is True
    assert "Traceback" not in board.console.text


REFUSED = [  # (command, the error): each is refused whole, under its own id, and changes nothing
    ({"op": "set", "relay": -1, "state": True}, "relay must be an integer 0..1"),
    ({"op": "set", "relay": 2, "state": True}, "relay must be an integer 0..1"),
    ({"op": "set", "relay": True, "state": True}, "relay must be an integer 0..1"),
    ({"op": "toggle", "relay": 1.0}, "relay must be an integer 0..1"),
    ({"op": "toggle"}, "relay must be an integer 0..1"),
    ({"op": "set", "relay": 0}, "state must be true or false"),
    ({"op": "set", "relay": 0, "state": 1}, "state must be true or false"),
    ({"op": "get", "relay": 5}, "relay must be an integer 0..1"),      # checked whenever present
    ({"op": "ping", "state": "x"}, "state must be true or false"),
    ({"op": "reboot"}, "unknown op 'reboot' (known: set, toggle, get, ping)"),
    ({"relay": 0}, "unknown op None (known: set, toggle, get, ping)"),
]


def test_refused_commands_are_answered_under_their_own_id_and_change_nothing(board, start_firmware, telemetry):
    device = start_firmware()
    online(telemetry, device)
    for i, (cmd, error) in enumerate(REFUSED):
        reply = command(telemetry, device, cmd, f"r{i}")
        assert reply == {"id": f"r{i}", "ok": False, "error": error}, (cmd, reply)
    # Ids that are not a string or an integer are refused, and not echoed.
    for bad_id in (True, 1.5, [1], {"a": 1}, None):
        mark = telemetry.mark()
        telemetry.publish(device.topic("cmd"), json.dumps({"id": bad_id, "op": "ping"}))
        reply = telemetry.expect(device.topic("reply"), since=mark, timeout=5).json()
        assert reply == {"id": None, "ok": False, "error": "id must be a string or an integer"}, (bad_id, reply)
    assert command(telemetry, device, {"op": "get"}, "after")["relays"] == [False, False]
    if board.sim is not None:
        board.sim.sync()
        assert [board.sim.pin(p).level for p in RELAY_PINS] == [0, 0]


def test_a_command_of_512_bytes_is_taken_and_513_refused(start_firmware, telemetry):
    device = start_firmware()
    online(telemetry, device)
    base = b'{"id": "big", "op": "ping", "pad": ""}'
    at_limit = base.replace(b'"pad": ""', b'"pad": "' + b"x" * (512 - len(base)) + b'"')
    assert len(at_limit) == 512
    for payload, ok in ((at_limit, True), (at_limit.replace(b'"pad": "', b'"pad": "y'), False)):
        mark = telemetry.mark()
        telemetry.publish(device.topic("cmd"), payload)
        reply = telemetry.expect(device.topic("reply"), since=mark, timeout=5).json()
        if ok:
            assert reply["ok"] is True and reply["id"] == "big", reply
        else:
            assert reply == {"id": None, "ok": False, "error": "command too long (513 bytes, max 512)"}


# Ids as the bytes a sender may put on the wire, and what the node must echo: real text, or a
# refusal. MicroPython's bytes.decode() checks only the shape of UTF-8 (it lets overlong forms,
# code points past U+10FFFF and surrogates through) and its json turns a "\ud83d\ude00" escape
# pair into two lone surrogates: the node checks and repairs both.
ID_TEXT = [
    (b"A\x7f", "A\x7f"), (b"a\\u0000b", "a\x00b"),
    (b"\xc2\x80", "\u0080"), (b"\xdf\xbf", "\u07ff"),
    (b"\xe0\xa0\x80", "\u0800"), (b"\xed\x9f\xbf", "\ud7ff"), (b"\xee\x80\x80", "\ue000"),
    (b"\xef\xbf\xbf", "\uffff"),
    (b"\xf0\x90\x80\x80", "\U00010000"), (b"\xf4\x8f\xbf\xbf", "\U0010ffff"),
    (b"caf\xc3\xa9 \xe2\x82\xac", "caf\u00e9 \u20ac"),
    (b"\\ud800\\udc00", "\U00010000"), (b"\\udbff\\udfff", "\U0010ffff"),
    (b"x\\ud83d\\ude00y\\ud83d\\ude00", "x\U0001f600y\U0001f600"),
    (b"\xc3\xa9\\ud83d\\ude00", "\u00e9\U0001f600"),
]
ID_NOT_TEXT = [
    b"\xc0\xaf", b"\xc1\xbf",                        # overlong forms of "/" and DEL
    b"\xe0\x9f\xbf", b"\xf0\x8f\xbf\xbf",            # overlong U+07FF and U+FFFF
    b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",        # past U+10FFFF
    b"\xed\xa0\x80", b"\xed\xb0\x80", b"\xed\xbf\xbf",  # lone surrogates as bytes
    b"\\ud800", b"\\udbff", b"\\ud800x", b"\\udc00", b"\\udfff",  # lone surrogates as escapes
    b"\\ud800\\ud800", b"\\udbff\\ue000",            # a high surrogate without its low one
]


def test_ids_are_echoed_as_real_text(start_firmware, telemetry):
    device = start_firmware()
    online(telemetry, device)
    for raw, text in ID_TEXT:
        mark = telemetry.mark()
        telemetry.publish(device.topic("cmd"), b'{"id": "' + raw + b'", "op": "ping"}')
        reply = telemetry.expect(device.topic("reply"), since=mark, timeout=5)
        assert reply.json()["id"] == text and reply.json()["ok"] is True, (raw, reply.payload)
    for raw in ID_NOT_TEXT:
        mark = telemetry.mark()
        telemetry.publish(device.topic("cmd"), b'{"id": "' + raw + b'", "op": "ping"}')
        reply = telemetry.expect(device.topic("reply"), since=mark, timeout=5)
        assert reply.json() == {"id": None, "ok": False,
                                "error": "id must be a string or an integer (valid text)"}, (raw, reply.payload)


def test_ping_reports_heap_after_a_collection(start_firmware, telemetry):
    """heap_free is measured after gc.collect(): pings in a row report the same heap (a leak check
    compares them), whatever garbage the commands between them left."""
    device = start_firmware()
    online(telemetry, device)
    heaps = []
    for i in range(4):
        for j in range(5):
            command(telemetry, device, {"op": "get", "pad": "x" * 200}, f"g{i}-{j}")
        heaps.append(command(telemetry, device, {"op": "ping"}, f"p{i}")["heap_free"])
    assert max(heaps) - min(heaps) <= 512, heaps


@pytest.mark.requires_sim
def test_button_press_toggles_relay_zero(sim, start_firmware, telemetry):
    device = start_firmware()
    online(telemetry, device)
    sim.pin(BUTTON_PIN).pulse(0)  # pressed: pulled-up input goes low, then released
    telemetry.expect(device.topic("state"), where={"relays": [True, False]}, timeout=10)
    sim.sync()
    assert sim.pin(RELAY_PINS[0]).level == 1 and sim.pin(RELAY_PINS[1]).level == 0
    device.console.expect("button: relay 0 on")


@pytest.mark.requires_sim
def test_button_presses_are_debounced(sim, start_firmware, telemetry):
    """A bounce (two edges 30 ms apart) is one press; a second press 400 ms later is another."""
    import time

    device = start_firmware()
    online(telemetry, device)
    telemetry.expect(device.topic("state"), where={"relays": [False, False]}, timeout=10)  # at boot
    mark = telemetry.mark()
    sim.pin(BUTTON_PIN).pulse(0)
    time.sleep(0.03)
    sim.pin(BUTTON_PIN).pulse(0)
    telemetry.expect(device.topic("state"), where={"relays": [True, False]}, since=mark, timeout=10)
    time.sleep(0.4)
    telemetry.expect_none(device.topic("state"), where={"relays": [False, False]}, since=mark, within=0)
    sim.pin(BUTTON_PIN).pulse(0)
    telemetry.expect(device.topic("state"), where={"relays": [False, False]}, since=mark, timeout=10)
    device.console.expect("button: relay 0 off")
    states = [m.json()["relays"] for m in telemetry.select(device.topic("state"), since=mark)]
    assert states == [[True, False], [False, False]], states


@pytest.mark.parametrize("relays", [[True, False], [False, True]])
def test_relay_state_survives_a_reboot(board, start_firmware, telemetry, relays):
    device = start_firmware()
    online(telemetry, device)
    for i, on in enumerate(relays):
        command(telemetry, device, {"op": "set", "relay": i, "state": on}, f"before{i}")
    device.run.stop()
    board.reset(hard=True)
    mark = telemetry.mark()
    device = start_firmware(client_id=device.client_id)
    telemetry.expect(device.topic("state"), where={"relays": relays}, since=mark, timeout=15)
    if board.sim is not None:
        board.sim.sync()
        assert [board.sim.pin(p).level for p in RELAY_PINS] == [int(on) for on in relays]
    assert command(telemetry, device, {"op": "get"}, "after")["relays"] == relays


@pytest.mark.requires_sim
@pytest.mark.sim(time="fast")
def test_relays_never_click_on_at_boot_and_the_node_runs_on(sim, start_firmware, telemetry, wait_board):
    """On a first boot the relays stay off from the first instant (no glitch a relay would click
    on); a minute of board time later the node still answers, the watchdog fed all along."""
    device = start_firmware()
    online(telemetry, device)
    sim.sync()
    for pin in RELAY_PINS:
        assert all(level == 0 for _, level in sim.pin(pin).history), (pin, sim.pin(pin).history)
    wait_board(60)
    assert command(telemetry, device, {"op": "get"}, "later")["relays"] == [False, False]
    assert not sim.resets and "rst:" not in device.console.text


def test_a_command_taken_while_the_state_waits_for_its_puback_is_not_lost(netfault, start_firmware, telemetry):
    """umqtt takes incoming messages while a QoS 1 publish waits for its PUBACK. With 300 ms on the
    way to the node, the second command arrives while the first one's state message waits: its
    change must still be published (it was lost when the flag was cleared after the publish)."""
    device = start_firmware(via=netfault)
    online(telemetry, device)
    telemetry.expect(device.topic("state"), where={"relays": [False, False]}, timeout=10)
    with netfault.latency(300, direction="down"):
        mark = telemetry.mark()
        telemetry.publish(device.topic("cmd"), {"id": "a", "op": "set", "relay": 1, "state": True})
        telemetry.expect(device.topic("reply"), where=lambda m: m.json().get("id") == "a", since=mark, timeout=5)
        telemetry.publish(device.topic("cmd"), {"id": "b", "op": "toggle", "relay": 0})
        telemetry.expect(device.topic("reply"), where=lambda m: m.json().get("id") == "b", since=mark, timeout=5)
        telemetry.expect(device.topic("state"), where={"relays": [True, True]}, since=mark, timeout=5)
    telemetry.assert_retained(device.topic("state"), {"relays": [True, True]})


@pytest.mark.requires_sim
@pytest.mark.sim(time="stepped")
@pytest.mark.parametrize("gap_ms, taken", [(190, False), (200, True)], ids=["190-ms-ignored", "200-ms-taken"])
def test_the_button_debounce_window_is_200_ms_at_its_edge(sim, start_firmware, telemetry, gap_ms, taken):
    """The main loop runs every 10 ms of board time and takes a press when it comes 200 ms or
    more after the last one taken. In stepped time the test sets when the loop sees each press:
    presses taken 190 ms apart are one toggle, 200 ms apart are two."""
    device = start_firmware()
    while "link: online" not in device.console.text:
        sim.advance(ms=100)  # the board's clock moves only when the test moves it
    telemetry.expect(device.topic("state"), where={"relays": [False, False]}, timeout=10)  # at boot
    sim.pin(BUTTON_PIN).pulse(0)
    sim.advance(ms=10)  # the next loop takes the press: relay 0 on
    on = telemetry.expect(device.topic("state"), where={"relays": [True, False]}, timeout=10)
    sim.advance(ms=gap_ms - 10)  # the loop has run up to gap_ms - 10 ms after the first press
    sim.pin(BUTTON_PIN).pulse(0)
    sim.advance(ms=10)  # ... and sees the second press gap_ms after the first
    sim.advance(ms=100)
    if taken:
        telemetry.expect(device.topic("state"), where={"relays": [False, False]}, since=on, timeout=10)
    else:
        telemetry.expect_none(device.topic("state"), since=on, within=0.5)
    sim.sync()
    assert sim.pin(RELAY_PINS[0]).level == (0 if taken else 1)
    states = [m.json()["relays"] for m in telemetry.select(device.topic("state"))]
    assert states == ([[False, False], [True, False], [False, False]] if taken else
                      [[False, False], [True, False]]), states
