"""Hypothesis strategies for ANY protobuf request message, built from its descriptor.

Nothing here knows a Shopmesh message: every field is filled (or left unset) by its type, so a new
RPC or field is fuzzed without touching this file. Values lean towards the edges that break
services: 0, -1, the integer limits, NaN and infinities, empty and very long strings, control
characters, SQL and JSON metacharacters, mixed scripts, unknown enum numbers, UUID-shaped strings
(so id fields sometimes parse and reach the database), timestamps and durations out of range.
"""

from __future__ import annotations

from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from hypothesis import strategies as st

F = descriptor.FieldDescriptor
MAX_DEPTH = 3

INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}

HOSTILE_STRINGS = [
    "",
    " ",
    "' OR '1'='1",
    "'; DROP TABLE orders; --",
    "1; SELECT pg_sleep(5)",
    '{"$gt": ""}',
    '"}]},{"x":',
    "\\u0000",
    "\x00",
    "\x00\x01\x1f\x7f",
    "line\nbreak\r\n\ttab",
    "%00%27%22",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "Ünïcödé ΑΒΓ Ж 中文 العربية עברית 🛒🔥",
    "\u202e\u200b\ufeff",
    "a" * 256,
    "9" * 40,
    "-1",
    "0",
    "NaN",
    "null",
]


def _text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE_STRINGS),
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=1200),
        st.uuids().map(str),
        st.from_regex(r"[a-z][a-z0-9_.-]{0,30}", fullmatch=True),
    )


def _integers(field: F) -> st.SearchStrategy[int]:
    low, high = INT_RANGES[field.type]
    edges = sorted({v for v in (0, 1, 2, 3, -1, 10**6, low, high) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high), st.integers(max(low, -5), min(high, 50)))


def _floats(field: F) -> st.SearchStrategy[float]:
    width = 32 if field.type == F.TYPE_FLOAT else 64
    return st.one_of(
        st.sampled_from([0.0, -0.0, -1.0, 1e308 if width == 64 else 3e38, float("nan"), float("inf")]),
        st.floats(width=width, allow_nan=True, allow_infinity=True),
    )


def _enum(field: F) -> st.SearchStrategy[int]:
    numbers = [v.number for v in field.enum_type.values]
    return st.one_of(st.sampled_from(numbers), st.integers(-3, 200))  # proto3 enums are open


def _well_known(
    desc: descriptor.Descriptor, cls: type[Message], plausible: bool
) -> st.SearchStrategy[Message] | None:
    if desc.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration") and plausible:
        return st.builds(lambda s: cls(seconds=s), st.integers(1, 3600))
    if desc.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        seconds = st.one_of(
            st.integers(-(10**6), 10**9),
            st.sampled_from([0, -1, 315_537_897_599, 315_537_897_600, -62_135_596_801, 2**62]),
        )
        nanos = st.one_of(st.integers(0, 999_999_999), st.sampled_from([-1, 10**9, 2**31 - 1]))
        return st.builds(lambda s, n: cls(seconds=s, nanos=n), seconds, nanos)
    if desc.full_name == "google.protobuf.FieldMask":
        return st.builds(lambda paths: cls(paths=paths), st.lists(_text(), max_size=4))
    return None


def _plausible(field: F) -> st.SearchStrategy[Any]:
    """Values a well-meaning client sends, so requests get past validation into the service."""
    if field.type == F.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values if v.number] or [0])
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type == F.TYPE_STRING:
        return st.one_of(
            st.from_regex(r"[a-z][a-z0-9 -]{0,14}", fullmatch=True),
            st.uuids().map(str),
            st.sampled_from(["USD", "GB", "US", "tok_approve", "electronics", "Acme"]),
        )
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=8)
    if field.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return st.floats(0, 100, width=32 if field.type == F.TYPE_FLOAT else 64)
    return st.integers(1, 20)


def _value(field: F, depth: int, plausible: bool = False) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE or field.type == F.TYPE_GROUP:
        return _message(field.message_type, depth + 1, plausible)
    if plausible:
        return _plausible(field)
    if field.type == F.TYPE_ENUM:
        return _enum(field)
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type == F.TYPE_STRING:
        return _text()
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return _floats(field)
    return _integers(field)


def _is_map(field: F) -> bool:
    return field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def message(desc: descriptor.Descriptor) -> st.SearchStrategy[Message]:
    """Messages of type `desc`: each field unset or set to a value of its type, either leaning to the
    edges (hostile) or plausible (small positive numbers, short names, UUIDs, known enum values)."""
    return st.one_of(_message(desc, 0, False), _message(desc, 0, True))


def _message(desc: descriptor.Descriptor, depth: int, plausible: bool) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(desc)
    special = _well_known(desc, cls, plausible)
    if special is not None:
        return special
    if depth > MAX_DEPTH:
        return st.just(cls())
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        if _is_map(field):
            key_field, value_field = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            optional[field.name] = st.dictionaries(
                _value(key_field, depth, plausible), _value(value_field, depth, plausible), max_size=3
            )
        elif field.is_repeated:
            optional[field.name] = st.lists(_value(field, depth, plausible), max_size=4)
        else:
            optional[field.name] = _value(field, depth, plausible)
    return st.fixed_dictionaries({}, optional=optional).map(lambda values: _build(cls, desc, values))


def _build(cls: type[Message], desc: descriptor.Descriptor, values: dict[str, Any]) -> Message:
    msg = cls()
    for name, value in values.items():
        field = desc.fields_by_name[name]
        if _is_map(field):
            target = getattr(msg, name)
            for key, item in value.items():
                if isinstance(item, Message):
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            getattr(msg, name).extend(value)
        elif field.type == F.TYPE_MESSAGE:
            getattr(msg, name).CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


def required_fields(desc: descriptor.Descriptor) -> list[F]:
    """Top-level fields the proto marks `(google.api.field_behavior) = REQUIRED`."""
    return [
        f
        for f in desc.fields
        if field_behavior_pb2.REQUIRED in f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    ]


def missing_required(msg: Message) -> list[str]:
    """Names of REQUIRED fields left unset or at their zero value (what proto3 cannot tell apart)."""
    missing = []
    for field in required_fields(msg.DESCRIPTOR):
        if field.is_repeated:
            present = len(getattr(msg, field.name)) > 0
        elif field.type == F.TYPE_MESSAGE:
            present = msg.HasField(field.name)
        else:
            present = getattr(msg, field.name) != field.default_value
        if not present:
            missing.append(field.name)
    return missing
