"""Differential mode: home_automation's own command parser on the board against a CPython
reference of its documented behaviour (integration: real unix-port board, no broker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from micropython_hil.deploy.firmware import Firmware
from micropython_hil.fuzz.differential import DifferenceFound, Differential
from micropython_hil.fuzz.strategies import encode, mutated_messages, raw_payloads, valid_messages

from hypothesis import strategies as st

HOME = Path(__file__).resolve().parent.parent / "firmware_under_test" / "home_automation"
SCHEMA = json.loads((HOME / "schemas" / "command.json").read_text())
OPS = ("set", "toggle", "get", "ping")


class CommandError(Exception):
    pass


def reference_parse(msg: bytes) -> dict:
    """home_automation's Node.parse as documented, on CPython's strict json."""
    if len(msg) > 512:
        raise CommandError("too long")
    try:
        cmd = json.loads(msg.decode("utf-8"))
    except (UnicodeError, ValueError):
        raise CommandError("not valid JSON") from None
    if not isinstance(cmd, dict):
        raise CommandError("not an object")
    cid = cmd.get("id")
    if isinstance(cid, str):
        try:
            cid.encode("utf-8")
        except UnicodeEncodeError:
            raise CommandError("id is not text") from None
    elif "id" in cmd and (not isinstance(cid, int) or isinstance(cid, bool)):
        raise CommandError("bad id")
    if cmd.get("op") not in OPS:
        raise CommandError("unknown op")
    return cmd


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeError:
        return False


@pytest.fixture
def parse_diff(fuzz_board):
    Firmware(HOME).deploy(fuzz_board)  # deployed, not running: the REPL is free
    return Differential(fuzz_board, setup="import app", function="lambda b: app.Node.parse(None, b)",
                        reference=reference_parse)


def _depth(v) -> int:
    """Nesting levels of a JSON value (0 for a scalar)."""
    if isinstance(v, dict):
        v = list(v.values())
    return 1 + max(map(_depth, v), default=0) if isinstance(v, list) else 0


def test_parser_agrees_with_the_reference_on_well_formed_json(parse_diff):
    # Raw UTF-8 (no \uXXXX escapes): MicroPython's json leaves an escaped surrogate pair as two
    # lone surrogates, a known difference the firmware repairs only where it echoes text (the id).
    # At most 64 levels deep: the board's canonical form of a deeper result runs out of
    # MicroPython's recursion (Differential's documented limit), which is no parser difference.
    objects = st.one_of(valid_messages(SCHEMA), mutated_messages(SCHEMA, max_size=400)).filter(
        lambda o: _depth(o) <= 64)
    utf8 = objects.map(lambda o: encode(o, ascii_only=False)).filter(_is_utf8)
    compared = parse_diff.run(utf8, examples=40, seed=2)
    assert compared >= 40


def test_first_difference_is_reported_shrunk(parse_diff):
    # MicroPython's json accepts text CPython's rejects (e.g. a trailing comma): a real
    # difference between the firmware's decoder and the standard, found and shrunk.
    with pytest.raises(DifferenceFound) as found:
        parse_diff.run(raw_payloads(SCHEMA, max_size=400), examples=200, seed=1)
    diff = found.value
    assert diff.board[0] == "ok" and diff.host == ("err", "CommandError")
    assert len(diff.payload) <= 32, diff.payload
    assert repr(diff.payload) in str(diff)
