"""Unit tests of the fuzzing strategies and oracle (no board, no broker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from micropython_hil.errors import FuzzBadReply, FuzzCrash, FuzzHang, FuzzWrongReply
from micropython_hil.fuzz.oracle import GARBAGE, INVALID, VALID, Contract, RelayModel, StrictValidator
from micropython_hil.fuzz.runner import example_database, run_property
from micropython_hil.fuzz.schema_strategies import schema_values
from micropython_hil.fuzz.strategies import encode, mutated_messages, payloads, raw_payloads, valid_messages

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware_under_test"
HOME = FIRMWARE / "home_automation" / "schemas"
COMMAND = json.loads((HOME / "command.json").read_text())
REPLY = json.loads((HOME / "reply.json").read_text())
QUICK = settings(max_examples=60, database=None, deadline=None, suppress_health_check=list(HealthCheck))


def contract(**kw) -> Contract:
    return Contract(COMMAND, REPLY, max_bytes=512, model=RelayModel(), **kw)


@QUICK
@given(valid_messages(COMMAND))
def test_valid_messages_satisfy_the_schema_strictly(msg):
    assert StrictValidator(COMMAND).is_valid(msg)


@QUICK
@given(payloads(COMMAND, max_size=600))
def test_payloads_are_bytes_within_a_sane_size(p):
    assert isinstance(p, bytes) and len(p) <= 8 * 600


RAW_KINDS = {
    "empty": lambda p: p == b"",
    "invalid UTF-8": lambda p: not _utf8(p),
    "oversized": lambda p: len(p) > 512,
    "not an object": lambda p: _utf8(p) and _json(p) is not None and not isinstance(_json(p), dict),
    "invalid JSON": lambda p: _utf8(p) and bool(p.strip()) and _json(p) is None,
}
MUTATION_KINDS = {
    "field missing": lambda m: isinstance(m, dict) and m.get("op") == "set" and "state" not in m,
    "out of range": lambda m: isinstance(m, dict) and isinstance(m.get("relay"), int) and m["relay"] > 1,
    "wrong type": lambda m: isinstance(m, dict) and isinstance(m.get("state"), str),
    "extra field": lambda m: isinstance(m, dict) and bool(set(m) - {"id", "op", "relay", "state"}),
    "deep nesting": lambda m: "[[[[[[[[" in json.dumps(m) or '{"a": {"a": {"a": {"a":' in json.dumps(m),
    "long string": lambda m: len(json.dumps(m)) > 300,
    "lone surrogate": lambda m: "\\ud800" in json.dumps(m) or "\\udfff" in json.dumps(m),
}


def kinds_seen(strategy, kinds: dict, examples: int = 1000, rounds: int = 5) -> set[str]:
    """The kinds drawn, over up to `rounds` seeded runs of `examples` draws each (it stops once
    every kind has come). One derandomized run still missed a kind now and then."""
    seen: set[str] = set()
    for round_ in range(rounds):
        @seed(round_)
        @settings(max_examples=examples, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def collect(x):
            seen.update(name for name, test in kinds.items() if test(x))

        collect()
        if seen >= set(kinds):
            break
    return seen


def test_raw_payloads_cover_each_kind():
    assert kinds_seen(raw_payloads(COMMAND, max_size=600), RAW_KINDS) == set(RAW_KINDS)


def test_mutations_cover_each_kind():
    assert kinds_seen(mutated_messages(COMMAND, max_size=600), MUTATION_KINDS) == set(MUTATION_KINDS)


def _utf8(p: bytes) -> bool:
    try:
        p.decode("utf-8")
        return True
    except UnicodeError:
        return False


def _json(p: bytes):
    try:
        return json.loads(p)
    except ValueError:
        return None


def test_encode_keeps_lone_surrogates_as_escapes_or_cesu_bytes():
    assert encode({"id": "\ud800"}) == b'{"id":"\\ud800"}'
    assert encode({"id": "\ud800"}, ascii_only=False) == b'{"id":"\xed\xa0\x80"}'


@pytest.mark.parametrize("payload, verdict", [
    (b'{"op":"set","relay":1,"state":true}', VALID),
    (b'{"op":"set","relay":1.0,"state":true}', INVALID),  # 1.0 is a float to the firmware
    (b'{"op":"set","relay":2,"state":true}', INVALID),
    (b'{"op":"ping","id":null}', INVALID),
    (b'{"op":"ping","pad":"' + b"x" * 600 + b'"}', INVALID),  # over max_bytes
    (b'[1]', INVALID),
    (b'{"op":"ping",}', GARBAGE),
    (b'\xff', GARBAGE),
    (b'{"op":"ping","id":"\\ud800"}', GARBAGE),
])
def test_classify(payload, verdict):
    assert contract().classify(payload)[0] == verdict


def test_check_reply_catches_each_kind_of_wrong_reply():
    c = contract()
    ok_set = b'{"id": 1, "op": "set", "relay": 0, "state": true}'
    assert c.check_reply(ok_set, b'{"id": 1, "ok": true, "relays": [true, false]}') is None
    assert c.check_reply(b'{"op":"toggle","relay":0}', b'{"id": null, "ok": true, "relays": [true, false]}')[0] \
        is FuzzWrongReply  # toggled back to off, the reply says on
    assert c.check_reply(b'{"op":"get","relay":9}', b'{"id": null, "ok": true, "relays": [false, false]}')[0] \
        is FuzzWrongReply  # invalid accepted
    assert c.check_reply(b'{"op":"get"}', b'{"id": null, "ok": false, "error": "x"}')[0] is FuzzWrongReply
    assert c.check_reply(b'{"op":"get"}', b'{"id": "\xed\xa0\x80", "ok": true}')[0] is FuzzBadReply
    assert c.check_reply(b'{"op":"get"}', b'{"ok": true}')[0] is FuzzBadReply  # no id: reply schema
    assert c.check_reply(b'\xff', b'{"id": null, "ok": false, "error": "not valid JSON"}') is None


def test_lenient_json_the_firmware_accepted_moves_the_model_to_the_board_state():
    c = contract()
    assert c.check_reply(b'{"op":"toggle","relay":1,}', b'{"id": null, "ok": true, "relays": [false, true]}') is None
    assert c.model.states == [False, True]


def test_failure_reports_exact_payload_and_a_regression_test():
    payload = b'{"op":"toggle","relay":2}\xff'
    failure = FuzzCrash(payload, "IndexError", [payload], "firmware_under_test/home_automation", "Traceback ...")
    text = str(failure)
    assert repr(payload) in text and "firmware crashed" in text and "Traceback" in text
    namespace: dict = {}
    exec(compile(failure.regression_test(), "regression.py", "exec"), namespace)
    test = next(v for k, v in namespace.items() if k.startswith("test_fuzz_regression_"))
    sent = []

    class Recorder:
        def check(self, payloads):
            sent.extend(payloads)

    test(Recorder())
    assert sent == [payload]
    assert test.pytestmark[0].args == ("firmware_under_test/home_automation",)


def test_a_failure_flagged_after_its_batch_names_the_batch_not_a_payload_in_it():
    """The liveness ping's failure is flagged on b"" (no payload of the batch): building the
    message once raised ValueError (b'' is not in list)."""
    batch = [b'{"op":"get"}', b'{"op":"toggle","relay":0}']
    failure = FuzzWrongReply(b"", "liveness ping: reply lost its id", batch, "firmware_under_test/home_automation")
    text = str(failure)
    assert "(after a batch of 2, all in the test below)" in text and "liveness ping: reply lost its id" in text
    inside = FuzzWrongReply(batch[1], "no effect", batch)
    assert "(payload 2 of a batch of 2, all in the test below)" in str(inside)


def test_relay_model_compares_pins_with_the_expected_state():
    class Pin:
        def __init__(self, level):
            self.level = level

    class Sim:
        def __init__(self, levels):
            self.levels = levels

        def pin(self, n):
            return Pin(self.levels[n])

    model = RelayModel([26, 27])
    model.apply({"op": "set", "relay": 1, "state": True}, {"relays": [False, True]})
    assert model.check_outputs(Sim({26: 0, 27: 1})) is None
    assert "expected [0, 1]" in model.check_outputs(Sim({26: 0, 27: 0}))


# -- schema_strategies: values from the JSON Schema subset the firmware formats use ------------
def draws(strategy, examples: int = 150, seed_: int = 0) -> list:
    """`examples` values drawn from `strategy` (seeded, no database)."""
    out: list = []

    @seed(seed_)
    @settings(max_examples=examples, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(x):
        out.append(x)

    collect()
    return out


@pytest.mark.parametrize("path", sorted(FIRMWARE.glob("*/schemas/*.json")), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_schema_values_of_every_firmware_schema_are_strictly_valid(path):
    schema = json.loads(path.read_text())
    values = draws(schema_values(schema), examples=80)
    assert values and all(StrictValidator(schema).is_valid(v) for v in values)


def test_schema_values_draw_optional_members_both_ways_and_meet_if_then():
    values = draws(schema_values(COMMAND), examples=300)
    assert {v["op"] for v in values} == {"set", "toggle", "get", "ping"}
    assert any("relay" in v for v in values) and any("relay" not in v for v in values)
    assert all({"relay", "state"} <= set(v) for v in values if v["op"] == "set")
    assert {type(v["id"]) for v in values if "id" in v} == {str, int}


@pytest.mark.parametrize("schema, ok", [
    ({"type": "integer", "minimum": 2, "maximum": 4}, lambda v: type(v) is int and 2 <= v <= 4),
    ({"type": "integer", "exclusiveMinimum": 2, "exclusiveMaximum": 4}, lambda v: v == 3),
    ({"type": "integer", "minimum": 0.5, "maximum": 2.5}, lambda v: v in (1, 2)),
    ({"type": "number", "minimum": -1, "exclusiveMaximum": 1}, lambda v: isinstance(v, (int, float)) and -1 <= v < 1),
    ({"type": "string", "minLength": 2, "maxLength": 3}, lambda v: isinstance(v, str) and 2 <= len(v) <= 3),
    ({"type": "string", "pattern": "^ab[0-9]", "maxLength": 5},  # searched, as JSON Schema does
     lambda v: v[:2] == "ab" and v[2].isdigit() and len(v) <= 5),
    ({"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 2},
     lambda v: 1 <= len(v) <= 2 and all(isinstance(x, bool) for x in v)),
    ({"type": "array", "items": {"enum": [1, 2, 3]}, "uniqueItems": True}, lambda v: len(set(v)) == len(v)),
    ({"type": ["null", "boolean"]}, lambda v: v is None or isinstance(v, bool)),
    ({"enum": ["a", 1, None], "type": "string"}, lambda v: v == "a"),
    ({"const": {"k": [1]}}, lambda v: v == {"k": [1]}),
    ({"type": "object", "additionalProperties": False}, lambda v: v == {}),
    ({"type": "object", "required": ["x"], "additionalProperties": {"type": "integer"}},
     lambda v: isinstance(v["x"], int) and all(isinstance(x, int) for x in v.values())),
    ({"properties": {"a": {"type": "object", "required": ["b"], "properties": {"b": {"const": 1}}}},
      "required": ["a"]}, lambda v: v["a"]["b"] == 1),
    ({"minimum": 3}, lambda v: isinstance(v, (int, float)) and v >= 3),
    ({}, lambda v: json.loads(json.dumps(v)) == v or v != v),
    ({"type": "integer", "not": {"const": 0}, "minimum": 0, "maximum": 1}, lambda v: v == 1),
])
def test_schema_values_keep_each_supported_keyword(schema, ok):
    values = draws(schema_values(schema), examples=60)
    bad = [v for v in values if not ok(v)]
    assert values and not bad, bad[:3]


def test_schema_values_draw_integers_and_floats_for_number():
    values = draws(schema_values({"type": "number", "minimum": 0, "maximum": 100}), examples=100)
    assert {type(v) for v in values} == {int, float}


@pytest.mark.parametrize("schema, words", [
    ({"type": "object", "patternProperties": {"^x": {}}}, "patternProperties not supported"),
    ({"$ref": "#/$defs/x", "$defs": {"x": {}}}, "$defs, $ref not supported"),
    ({"type": "array", "items": {"multipleOf": 3}}, "#/items: keyword(s) multipleOf"),
    ({"type": "integer", "minimum": 3, "maximum": 2}, "no integer lies within its bounds"),
    ({"type": "number", "exclusiveMinimum": 1, "maximum": 1}, "no number lies within its bounds"),
    ({"type": "string", "minLength": 3, "maxLength": 2}, "maxLength 2 is below minLength 3"),
    ({"type": "string", "enum": [1, 2]}, "no value of its enum/const"),
    ({"type": "object", "required": ["x"], "additionalProperties": False}, "'x' is required"),
    ({"type": "object", "properties": {"x": False}}, "#/properties/x: False accepts no value"),
    ({"type": "decimal"}, "unknown type 'decimal'"),
])
def test_schema_values_refuse_what_they_cannot_generate(schema, words):
    with pytest.raises(ValueError, match="fuzz schema") as e:
        schema_values(schema)
    assert words in str(e.value)


# -- runner: seeds and the example database -------------------------------------------------------
def test_seeded_runs_draw_the_same_test_cases():
    def drawn(seed_):
        out = []
        run_property(lambda data: out.append(data.draw(st.integers(0, 10**9))), examples=20, seed=seed_,
                     database=None, key="k")
        return out

    assert drawn(7) == drawn(7)
    assert drawn(7) != drawn(8)


def test_a_stored_failure_is_replayed_first_even_by_a_seeded_run(tmp_path):
    seen: list[int] = []

    def prop(data):
        n = data.draw(st.integers(0, 10**6))
        seen.append(n)
        assert n < 1000

    with pytest.raises(AssertionError):
        run_property(prop, examples=200, seed=1, database=tmp_path, key="firmware A")
    minimal = seen[-1]
    assert minimal == 1000  # shrunk
    seen.clear()
    with pytest.raises(AssertionError):
        run_property(prop, examples=200, seed=2, database=tmp_path, key="firmware A")
    assert seen[0] == minimal  # replayed before any new test case
    seen.clear()
    with pytest.raises(AssertionError):  # another key has no stored failure: it starts afresh
        run_property(prop, examples=200, seed=2, database=tmp_path, key="firmware B")
    assert seen[0] != minimal


def test_each_key_has_its_own_database_folder(tmp_path):
    assert example_database(None, "k") is None
    a, b = example_database(tmp_path, "a"), example_database(tmp_path, "b")
    a.save(b"key", b"value")
    assert list(a.fetch(b"key")) == [b"value"] and list(b.fetch(b"key")) == []
    assert list(example_database(tmp_path, "a").fetch(b"key")) == [b"value"]


# -- the fuzzer's verdicts: a wrong reply is reported as wrong, a silence as a hang ----------------
class _FakeRun:
    running, error = True, None


class _FakeConsole:
    text = ""

    def tail(self) -> str:
        return ""


class _FakeBoard:
    """A board whose firmware is a Python function: each command published gets its answer."""

    name, sim = "fake#1", None

    def __init__(self, broker):
        self.broker, self.console = broker, _FakeConsole()

    def run(self, script):
        self.broker.route(self.broker.prefix + "/status", b"online")
        return _FakeRun()

    def reset(self):
        pass

    def stop(self):
        pass


class _FakeFirmware:
    name, path = "fake_firmware", Path("fake_firmware").resolve()

    def __init__(self, broker):
        self.broker = broker

    def deploy(self, board, cfg):
        self.broker.prefix = cfg["topic_prefix"]


class _FakeBroker:
    host, port, credentials = "127.0.0.1", 1883, None

    def __init__(self, answer):
        self.answer, self.listeners, self.prefix = answer, [], ""

    def add_listener(self, listener):
        self.listeners.append(listener)

    def remove_listener(self, listener):
        self.listeners.remove(listener)

    def route(self, topic, payload):
        for listener in list(self.listeners):
            listener(topic, payload, 1, False, False, None)

    def client(self, client_id):
        broker = self

        class Client:
            def publish(self, topic, payload, qos=0):
                reply = broker.answer(json.loads(payload))
                if reply is not None:
                    broker.route(broker.prefix + "/reply", json.dumps(reply).encode())

            def close(self):
                pass

        return Client()


def fake_fuzzer(answer):
    from micropython_hil.fuzz.fuzzer import Fuzzer

    broker = _FakeBroker(answer)
    fuzzer = Fuzzer(_FakeBoard(broker), _FakeFirmware(broker), broker, Contract(COMMAND, REPLY, max_bytes=512),
                    timeout=0.3, database=None)
    return fuzzer.start()


def test_a_reply_that_lost_its_id_is_a_wrong_reply_not_a_hang():
    # Every reply comes, but with its id dropped: the ping's answer carries no "fz-N" either.
    fuzzer = fake_fuzzer(lambda cmd: {"id": None, "ok": True, "pong": True, "heap_free": 50000})
    with pytest.raises(FuzzWrongReply) as e:
        fuzzer.check([b'{"op": "ping"}'])
    text = str(e.value)
    assert "answered wrongly" in text and "liveness ping" in text and "is not the command's" in text, text
    assert "2 replies to 1 command(s) and the liveness ping" in text
    assert "replies came" not in text and "no answer" not in text


def test_a_command_answered_under_another_id_is_a_wrong_reply():
    fuzzer = fake_fuzzer(lambda cmd: {"id": "other", "ok": True, "pong": True, "heap_free": 50000})
    with pytest.raises(FuzzWrongReply) as e:
        fuzzer.check([b'{"id": 7, "op": "ping"}'])
    assert "reply id 'other' is not the command's 7" in str(e.value)


def test_silence_after_the_commands_is_still_a_hang():
    def answer(cmd):
        if str(cmd.get("id", "")).startswith("fz-"):
            return None  # the liveness ping goes unanswered
        return {"id": cmd.get("id"), "ok": True, "pong": True, "heap_free": 50000}

    fuzzer = fake_fuzzer(answer)
    with pytest.raises(FuzzHang) as e:
        fuzzer.check([b'{"id": 1, "op": "ping"}'])
    assert "1 of 1 replies came" in str(e.value)


def test_a_refused_command_is_answered_under_its_own_id():
    c = contract()
    refused = b'{"id": "c9", "op": "explode"}'
    assert c.check_reply(refused, b'{"id": "c9", "ok": false, "error": "unknown op"}') is None
    problem = c.check_reply(refused, b'{"id": null, "ok": false, "error": "unknown op"}')
    assert problem[0] is FuzzWrongReply and "came with id None" in problem[1]
    # Ids the firmware cannot read (wrong type, or the payload is over the size limit): any id.
    assert c.check_reply(b'{"id": true, "op": "ping"}', b'{"id": null, "ok": false, "error": "bad id"}') is None
    long = b'{"id": "x", "op": "ping", "pad": "' + b"y" * 600 + b'"}'
    assert c.check_reply(long, b'{"id": null, "ok": false, "error": "too long"}') is None
