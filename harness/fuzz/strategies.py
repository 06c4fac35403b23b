"""hypothesis strategies for a firmware's message formats, all producing the exact payload bytes.

Three families, mixed by `payloads(schema)`:
  valid      messages generated from the format's JSON Schema (schema_strategies)
  near-valid a valid message with one mutation: a field missing, a wrong type, out of range,
             an extra field, deep nesting, a long string, a unicode edge case
  raw        bytes that are not a well-formed message: empty, invalid UTF-8, truncated or
             non-object JSON, random binary, oversized (up to `max_size`)
Payloads are bytes so a failure is reported (and replayed) exactly as the firmware received it.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from .schema_strategies import schema_values

# Strings firmware often gets wrong: NUL, lone surrogates (legal as JSON escapes, not as UTF-8),
# noncharacters, astral plane, combining marks, bidi override, BOM, overlong-looking text.
UNICODE_EDGES = ["", "\x00", "\ud800", "\udfff", "\ud83d", "\uffff", "\ufffe", "\U0001f600",
                 "e\u0301", "\u202e", "\ufeff", "\u0085", "\u2028", "%s%n", "\\", '"', "\x7f"]
# Bytes that can never appear in UTF-8, or start sequences that the payload then breaks.
INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc0\xaf", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"]

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=8))
ANY_JSON = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                               st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                        max_leaves=6)


def encode(obj: Any, ascii_only: bool = True, compact: bool = True) -> bytes:
    """JSON bytes of `obj`; lone surrogates become \\uXXXX escapes (ascii) or CESU-8 bytes (not)."""
    text = json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":") if compact else None)
    return text.encode("utf-8", "surrogatepass")


def encoded(objects: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    """`objects` as JSON bytes, in ASCII-escaped or UTF-8 and compact or spaced form."""
    return st.tuples(objects, st.booleans(), st.booleans()).map(lambda t: encode(*t))


_SCHEMA_STRATEGIES: dict[str, st.SearchStrategy] = {}


def valid_messages(schema: dict) -> st.SearchStrategy[dict]:
    """Messages valid against `schema` (objects, as Python values); built once per schema
    (see schema_strategies for the JSON Schema subset understood). Extra members come from
    the "extra" mutation."""
    key = json.dumps(schema, sort_keys=True)
    if key not in _SCHEMA_STRATEGIES:
        _SCHEMA_STRATEGIES[key] = schema_values(schema)
    return _SCHEMA_STRATEGIES[key]


def _out_of_range(sub: dict) -> st.SearchStrategy:
    """Values just outside what a property allows: past min/max, not in the enum, wrong const."""
    options = []
    past = st.one_of(st.just(1), st.integers(1, 3), st.just(1), st.integers(1, 1 << 40))  # mostly just past the edge
    if "maximum" in sub:
        options.append(past.map(lambda d, m=sub["maximum"]: m + d))
    if "minimum" in sub:
        options.append(past.map(lambda d, m=sub["minimum"]: m - d))
    if "enum" in sub or "const" in sub:
        allowed = sub.get("enum", [sub.get("const")])
        options.append(st.text(max_size=10).filter(lambda s, a=allowed: s not in a))
        options.append(st.sampled_from([str(a).upper() for a in allowed if isinstance(a, str)] or [""]))
    if "maxLength" in sub:
        options.append(st.text(min_size=sub["maxLength"] + 1, max_size=sub["maxLength"] + 8))
    return st.one_of(options) if options else ANY_JSON


def _nested(depth: int, leaf: Any, as_list: bool) -> Any:
    for _ in range(depth):
        leaf = [leaf] if as_list else {"a": leaf}
    return leaf


# Strategies are built once (per schema and size) and only drawn from inside the composites:
# constructing strategies on every draw costs more than the draw itself.
_BOOL = st.booleans()
# Out-of-range and wrong-type values are where handlers break most: they are drawn most often.
_KINDS = st.sampled_from(["out_of_range", "wrong_type", "drop", "out_of_range", "extra", "nest",
                          "wrong_type", "long", "out_of_range", "unicode"])
_RAW_KINDS = st.sampled_from(["empty", "invalid_utf8", "truncated", "not_object", "binary", "oversized", "trailing"])
_EDGES = st.sampled_from(UNICODE_EDGES)
_SHORT_TEXT = st.text(max_size=3)
_LONG_CHARS = st.sampled_from("a\u00e9\u4e2d\U0001f600")
_EMPTYISH = st.sampled_from([b"", b" ", b"\x00", b"null", b"{}"])
_BAD_BYTES = st.sampled_from(INVALID_UTF8)
_NOT_OBJECT = st.one_of(JSON_SCALARS, st.lists(JSON_SCALARS, max_size=4))
_BINARY = st.binary(max_size=64)
_TRAILERS = st.sampled_from([b",", b"}", b"]", b"x", b" 1", b"\x00"])


def mutated_messages(schema: dict, max_size: int = 1024) -> st.SearchStrategy[dict | list]:
    """A valid message with one mutation applied (see the module docstring)."""
    valid = valid_messages(schema)
    props = dict(schema.get("properties") or {})
    fields = st.sampled_from(sorted(props) or ["x"])
    out_of_range = {name: _out_of_range(sub) for name, sub in props.items()}
    limited = sorted(name for name, sub in props.items()
                     if {"maximum", "minimum", "enum", "const", "maxLength"} & set(sub))
    limited_fields = st.sampled_from(limited) if limited else fields
    extra_key = st.text(max_size=12).filter(lambda k: k not in props)
    sizes = st.integers(1, max(1, max_size))
    depths = st.integers(1, max(1, max_size // 2))

    @st.composite
    def mutate(draw: st.DrawFn) -> dict | list:
        msg = dict(draw(valid))
        kind, name = draw(_KINDS), draw(fields)
        if kind == "drop" and msg:
            msg.pop(draw(st.sampled_from(sorted(msg))))
        elif kind == "wrong_type":
            msg[name] = draw(ANY_JSON)
        elif kind == "out_of_range":
            name = draw(limited_fields)
            msg[name] = draw(out_of_range.get(name, ANY_JSON))
        elif kind == "extra":
            msg[draw(extra_key)] = draw(ANY_JSON)
        elif kind == "nest":
            nested = _nested(draw(depths), msg.get(name), draw(_BOOL))
            if draw(_BOOL):
                return nested  # the whole message buried
            msg[name] = nested
        elif kind == "long":
            size, char = draw(sizes), draw(_LONG_CHARS)
            count = max(1, size // len(encode(char)))  # about `size` bytes once escaped
            msg[name if draw(_BOOL) else "k" * count] = char * count
        else:
            edge = draw(_EDGES) + draw(_SHORT_TEXT)
            if draw(_BOOL):
                msg[name] = edge
            else:
                msg[edge] = msg.pop(name, None)
        return msg

    return mutate()


def raw_payloads(schema: dict | None = None, max_size: int = 1024) -> st.SearchStrategy[bytes]:
    """Bytes that are not a well-formed message (see the module docstring)."""
    bases = encoded(valid_messages(schema)) if schema is not None else st.just(b'{"a":1}')
    sizes = st.integers(0, max_size)

    @st.composite
    def raw(draw: st.DrawFn) -> bytes:
        base, kind = draw(bases), draw(_RAW_KINDS)
        if kind == "empty":
            return draw(_EMPTYISH)
        if kind == "invalid_utf8":
            at = draw(st.integers(0, len(base)))
            return base[:at] + draw(_BAD_BYTES) + base[at:]
        if kind == "truncated":
            return base[:draw(st.integers(0, max(0, len(base) - 1)))]
        if kind == "not_object":
            return encode(draw(_NOT_OBJECT))
        if kind == "binary":
            return draw(_BINARY)
        if kind == "oversized":
            size = max(len(base), draw(sizes))
            if draw(_BOOL) or not base.startswith(b"{") or base == b"{}":
                return base + b" " * (size - len(base))  # whitespace: still the same valid JSON
            return b'{"pad":"' + b"x" * max(0, size - len(base) - 9) + b'",' + base[1:]
        return base + draw(_TRAILERS)

    return raw()


def payloads(schema: dict, max_size: int = 1024) -> st.SearchStrategy[bytes]:
    """The three families mixed: valid, near-valid and raw payload bytes for one message format."""
    mutated = encoded(mutated_messages(schema, max_size))
    # Near-valid payloads weigh double: they reach deepest into the firmware's handling.
    return st.one_of(encoded(valid_messages(schema)), mutated, mutated, raw_payloads(schema, max_size))


def batches(schema: dict, max_size: int = 1024, batch: int = 16) -> st.SearchStrategy[list[bytes]]:
    """Lists of 1..`batch` payloads: one hypothesis example delivered in one pipelined round."""
    return st.lists(payloads(schema, max_size), min_size=1, max_size=batch)
