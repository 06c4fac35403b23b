"""hypothesis strategies of the values a JSON Schema (draft 2020-12) accepts, for the subset of
JSON Schema that message formats use.

Generated from:  type (one or a list), enum, const, minimum, maximum, exclusiveMinimum,
                 exclusiveMaximum, minLength, maxLength, pattern, items, minItems, maxItems,
                 uniqueItems, properties, required, additionalProperties
Checked only:    allOf, if/then/else, not, dependentRequired: values are generated without
                 them, then kept if the whole schema accepts them
Ignored:         annotations (title, description, $schema, format, default, ...)
Any other keyword raises ValueError when the strategy is built, rather than yield values the
schema rejects (or none at all).

Optional object members are present 3 times in 4 (so if/then requirements are met often);
shrinking drops them. Members not in `properties` are not generated (they are the fuzzer's
"extra" mutation). Shrinking moves toward simple values: enum members shortest first, types
in the order null, boolean, integer, number, string, array, object.

hypothesis-jsonschema did this job until it broke on hypothesis's internals ('many' object has
no attribute 'more', from hypothesis 6.170.10 on); this builder uses hypothesis's public
strategies only.
"""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema
from hypothesis import strategies as st

_GENERATING = {"type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
               "minLength", "maxLength", "pattern", "items", "minItems", "maxItems", "uniqueItems",
               "properties", "required", "additionalProperties"}
_CHECKED = {"allOf", "if", "then", "else", "not", "dependentRequired"}
_ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "default", "examples",
                "deprecated", "readOnly", "writeOnly", "format", "contentMediaType", "contentEncoding"}
# Keywords that imply a type when the schema names none.
_IMPLIED = {"object": {"properties", "required", "additionalProperties"},
            "array": {"items", "minItems", "maxItems", "uniqueItems"},
            "string": {"minLength", "maxLength", "pattern"},
            "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}}
_TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(),
                     st.floats(allow_nan=False, allow_infinity=False), st.text())
# Any JSON value: what an unconstrained schema ({} or true) accepts.
ANY_VALUE = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(), inner, max_size=3)),
                         max_leaves=5)
_PRESENT = st.integers(0, 3)  # an optional member is drawn unless this is 0


def schema_values(schema: dict | bool) -> st.SearchStrategy[Any]:
    """Values `schema` accepts (as Python values: dict, list, str, int, float, bool, None)."""
    is_valid = jsonschema.Draft202012Validator(schema).is_valid
    return _build(schema, "#").filter(is_valid)


def _build(schema: dict | bool, where: str) -> st.SearchStrategy[Any]:
    if schema is True:
        return ANY_VALUE
    if schema is False or not isinstance(schema, dict):
        raise ValueError(f"fuzz schema {where}: {schema!r} accepts no value to generate")
    unknown = sorted(set(schema) - _GENERATING - _CHECKED - _ANNOTATIONS)
    if unknown:
        raise ValueError(f"fuzz schema {where}: keyword(s) {', '.join(unknown)} not supported; "
                         f"the generator knows {', '.join(sorted(_GENERATING | _CHECKED))}")
    if "enum" in schema or "const" in schema:
        return _choices(schema, where)
    types = schema.get("type")
    if types is None:
        types = [t for t, words in _IMPLIED.items() if words & set(schema)]
        if not types:
            return ANY_VALUE
    elif isinstance(types, str):
        types = [types]
    for t in types:
        if t not in _TYPES:
            raise ValueError(f"fuzz schema {where}: unknown type {t!r}")
    return st.one_of([_of_type(t, schema, where) for t in _TYPES if t in types])


def _choices(schema: dict, where: str) -> st.SearchStrategy[Any]:
    options = schema["enum"] if "enum" in schema else [schema["const"]]
    if "enum" in schema and "const" in schema:
        options = [v for v in options if v == schema["const"]]
    is_valid = jsonschema.Draft202012Validator(schema).is_valid
    options = [v for v in options if is_valid(v)]
    if not options:
        raise ValueError(f"fuzz schema {where}: no value of its enum/const is valid against it")
    # Shortest first: failures shrink to the member that makes the shortest message.
    return st.sampled_from(sorted(options, key=_simplicity))


def _simplicity(v: Any) -> tuple[int, str]:
    text = json.dumps(v, sort_keys=True)
    return len(text), text


def _of_type(t: str, schema: dict, where: str) -> st.SearchStrategy[Any]:
    if t == "null":
        return st.none()
    if t == "boolean":
        return st.booleans()
    if t in ("integer", "number"):
        return _numbers(t, schema, where)
    if t == "string":
        return _strings(schema, where)
    if t == "array":
        return _arrays(schema, where)
    return _objects(schema, where)


def _bound(schema: dict, inclusive: str, exclusive: str, where: str, stricter: Any) -> tuple[Any, bool]:
    """(bound, exclusive?) of one side; `stricter(a, b)` picks the tighter of two values."""
    value, excl = schema.get(inclusive), False
    if exclusive in schema:
        x = schema[exclusive]
        if isinstance(x, bool):  # draft 4's boolean form: not 2020-12
            raise ValueError(f"fuzz schema {where}: {exclusive} must be a number (draft 2020-12)")
        if value is None or stricter(x, value) == x:
            value, excl = x, True
    return value, excl


def _numbers(t: str, schema: dict, where: str) -> st.SearchStrategy[Any]:
    lo, lo_excl = _bound(schema, "minimum", "exclusiveMinimum", where, max)
    hi, hi_excl = _bound(schema, "maximum", "exclusiveMaximum", where, min)
    # Integers are numbers too: a "number" is drawn as either.
    ilo = None if lo is None else (math.floor(lo) + 1 if lo_excl else math.ceil(lo))
    ihi = None if hi is None else (math.ceil(hi) - 1 if hi_excl else math.floor(hi))
    options = []
    if ilo is None or ihi is None or ilo <= ihi:
        options.append(st.integers(min_value=ilo, max_value=ihi))
    if t == "number" and (lo is None or hi is None or lo < hi or (lo == hi and not (lo_excl or hi_excl))):
        options.append(st.floats(min_value=lo, max_value=hi, exclude_min=lo_excl and lo is not None,
                                 exclude_max=hi_excl and hi is not None,
                                 allow_nan=False, allow_infinity=False))
    if not options:
        raise ValueError(f"fuzz schema {where}: no {t} lies within its bounds")
    return st.one_of(options)


def _strings(schema: dict, where: str) -> st.SearchStrategy[str]:
    lo, hi = schema.get("minLength", 0), schema.get("maxLength")
    if hi is not None and hi < lo:
        raise ValueError(f"fuzz schema {where}: maxLength {hi} is below minLength {lo}")
    if "pattern" not in schema:
        return st.text(min_size=lo, max_size=hi)
    # JSON Schema patterns are searched, not matched whole: so are from_regex's.
    return st.from_regex(schema["pattern"]).filter(lambda s: lo <= len(s) and (hi is None or len(s) <= hi))


def _arrays(schema: dict, where: str) -> st.SearchStrategy[list]:
    items = _build(schema["items"], f"{where}/items") if "items" in schema else ANY_VALUE
    unique = (lambda v: json.dumps(v, sort_keys=True)) if schema.get("uniqueItems") else None
    return st.lists(items, min_size=schema.get("minItems", 0), max_size=schema.get("maxItems"),
                    unique_by=unique)


def _objects(schema: dict, where: str) -> st.SearchStrategy[dict]:
    props = dict(schema.get("properties") or {})
    required = set(schema.get("required", ()))
    extra = schema.get("additionalProperties", True)
    for name in sorted(required - set(props)):  # required, described by additionalProperties
        if extra is False:
            raise ValueError(f"fuzz schema {where}: {name!r} is required but additionalProperties is false")
        props[name] = extra
    if not props:
        if extra is False:
            return st.just({})
        values = ANY_VALUE if extra is True else _build(extra, f"{where}/additionalProperties")
        return st.dictionaries(st.text(), values, max_size=3)
    members = [(name, name in required, _build(sub, f"{where}/properties/{name}"))
               for name, sub in sorted(props.items())]

    @st.composite
    def objects(draw: st.DrawFn) -> dict:
        return {name: draw(values) for name, needed, values in members if needed or draw(_PRESENT) > 0}

    return objects()
