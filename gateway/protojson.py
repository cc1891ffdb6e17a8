"""Response message -> proto3 JSON dict, by a converter compiled once per message type.

json_format.MessageToDict walks the descriptor of every field of every message on every call (pure
Python: ~40% of the gateway's CPU on a 20-hit search). Here each message type gets one generated
function that reads its fields and builds the dict directly, with the same mapping as MessageToDict
with always_print_fields_with_no_presence: lowerCamelCase json names; fields with presence
(messages, `optional`, oneof members) only when set, all others always, defaults included; 64-bit
integers as strings; enums by name (unknown values of open enums as numbers, NullValue as null);
bytes as base64; NaN and infinities as "NaN"/"Infinity"/"-Infinity"; float32 at its shortest;
map keys as strings; wrappers as their value; Timestamp, Duration and FieldMask as their JSON
strings. Any, Struct, Value, ListValue and messages with extensions go to json_format itself.

Anything the generated code cannot convert (an invalid Timestamp, an unknown value of a closed enum)
is converted again by json_format, so the result, or the error raised, is json_format's.
Only key order may differ (it is no part of the JSON contract): the fields without presence come
first, then the set ones, each group in field-number order.
"""

from __future__ import annotations

import base64
import keyword
import time
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.internal.type_checkers import ToShortestFloat
from google.protobuf.message import Message

Printer = Callable[[Message], Any]

_TIMESTAMP = "google.protobuf.Timestamp"
_STRING_WKTS = frozenset({"google.protobuf.Duration", "google.protobuf.FieldMask"})
_WRAPPERS_FILE = "google/protobuf/wrappers.proto"
_NULL_VALUE = "google.protobuf.NullValue"
_INT64_TYPES = (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64)
_TIMESTAMP_SECONDS_MIN = -62135596800  # 0001-01-01T00:00:00Z
_TIMESTAMP_SECONDS_MAX = 253402300799  # 9999-12-31T23:59:59Z
_YEAR_1000 = -30610224000  # 1000-01-01T00:00:00Z


def _reference_printer() -> json_format._Printer:
    return json_format._Printer(always_print_fields_with_no_presence=True)


def reference_dict(message: Message) -> Any:
    """json_format's own answer, which the compiled converters must equal."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=False, always_print_fields_with_no_presence=True
    )


def _special_double(value: float) -> str:
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _double(value: float) -> float | str:
    return value if value - value == 0 else _special_double(value)


def _float(value: float) -> float | str:
    return ToShortestFloat(value) if value - value == 0 else _special_double(value)


def _bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("utf-8")


def _timestamp(stamp: Message) -> str:
    """Timestamp.ToJsonString without its datetime arithmetic: RFC 3339, Z, 0/3/6/9 digits."""
    seconds = stamp.seconds  # type: ignore[attr-defined]
    nanos = stamp.nanos  # type: ignore[attr-defined]
    if not (_TIMESTAMP_SECONDS_MIN <= seconds <= _TIMESTAMP_SECONDS_MAX and 0 <= nanos < 1_000_000_000):
        return stamp.ToJsonString()  # type: ignore[attr-defined]  # raises json_format's ValueError
    t = time.gmtime(seconds)
    if seconds >= _YEAR_1000:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", t)
    else:  # strftime's %Y does not pad years below 1000 to four digits
        text = "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}".format(*t[:6])
    if nanos == 0:
        return text + "Z"
    if nanos % 1_000_000 == 0:
        return f"{text}.{nanos // 1_000_000:03d}Z"
    if nanos % 1000 == 0:
        return f"{text}.{nanos // 1000:06d}Z"
    return f"{text}.{nanos:09d}Z"


def _cached_timestamps(limit: int = 4096) -> Callable[[Message], str]:
    """_timestamp behind a bounded memo: a catalog's create/update times repeat across responses."""
    memo: dict[tuple[int, int], str] = {}

    def timestamp(stamp: Message) -> str:
        key = (stamp.seconds, stamp.nanos)  # type: ignore[attr-defined]
        text = memo.get(key)
        if text is None:
            text = _timestamp(stamp)
            if len(memo) >= limit:
                memo.clear()
            memo[key] = text
        return text

    return timestamp


def _string_wkt(message: Message) -> str:
    return message.ToJsonString()  # type: ignore[attr-defined]


class _Compiler:
    """Generates one function per message type into one namespace (recursive types refer by name)."""

    def __init__(self) -> None:
        self._reference = _reference_printer()
        self.namespace: dict[str, Any] = {
            "_double": _double,
            "_float": _float,
            "_bytes": _bytes,
            "_timestamp": _cached_timestamps(),
            "_string_wkt": _string_wkt,
            "_generic": self._reference._MessageToJsonObject,
        }
        self._names: dict[str, str] = {}
        self._sources: list[str] = []

    def _constant(self, value: Any) -> str:
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def message_function(self, descriptor: Descriptor) -> str:
        """The namespace name of the function converting this message type (compiled on first use)."""
        full_name = descriptor.full_name
        if full_name in self._names:
            return self._names[full_name]
        if full_name == _TIMESTAMP:
            return "_timestamp"
        if full_name in _STRING_WKTS:
            return "_string_wkt"
        if full_name in json_format._WKTJSONMETHODS or descriptor.extension_ranges:
            return "_generic"
        name = f"_m{len(self._names)}"
        self._names[full_name] = name
        if descriptor.file.name == _WRAPPERS_FILE:
            value = descriptor.fields_by_name["value"]
            self._sources.append(f"def {name}(m):\n    return {self._scalar(value, 'm.value')}\n")
            return name
        fields = sorted(descriptor.fields, key=lambda f: f.number)
        always = [f for f in fields if not _has_presence(f)]
        present = [f for f in fields if _has_presence(f)]
        items = ", ".join(f"{f.json_name!r}: {self._value(f, _access('m', f))}" for f in always)
        lines = [f"def {name}(m):", f"    d = {{{items}}}"]
        for field in present:
            lines.append(f"    if m.HasField({field.name!r}):")
            lines.append(f"        d[{field.json_name!r}] = {self._value(field, _access('m', field))}")
        lines.append("    return d")
        self._sources.append("\n".join(lines) + "\n")
        return name

    def field_function(self, field: FieldDescriptor) -> str:
        """A function of the containing message returning one field's JSON (None when unset)."""
        name = f"_f{len(self._sources)}_{field.name}"
        access = _access("m", field)
        if _has_presence(field):
            body = f"    if not m.HasField({field.name!r}):\n        return None\n"
        else:
            body = ""
        self._sources.append(f"def {name}(m):\n{body}    return {self._value(field, access)}\n")
        return name

    def _value(self, field: FieldDescriptor, access: str) -> str:
        if json_format._IsMapEntry(field):
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            if key_field.type == FieldDescriptor.TYPE_BOOL:
                key = '("true" if k else "false")'
            else:
                key = "str(k)"
            return f"{{{key}: {self._scalar(value_field, 'v')} for k, v in {access}.items()}}"
        if field.is_repeated:
            return f"[{self._scalar(field, 'x')} for x in {access}]"
        return self._scalar(field, access)

    def _scalar(self, field: FieldDescriptor, value: str) -> str:
        """The JSON of one (non-repeated) value of this field's type."""
        cpp = field.cpp_type
        if cpp == FieldDescriptor.CPPTYPE_MESSAGE:
            return f"{self.message_function(field.message_type)}({value})"
        if cpp == FieldDescriptor.CPPTYPE_ENUM:
            if field.enum_type.full_name == _NULL_VALUE:
                return "None"
            # names as json_format prints them (json_name extension included); unknown numbers stay
            # numbers for open enums and fail (then json_format raises its error) for closed ones
            names = {
                number: self._reference._FieldToJsonObject(field, number)
                for number in field.enum_type.values_by_number
            }
            table = self._constant(names)
            if field.enum_type.is_closed:
                return f"{table}[{value}]"
            return f"{table}.get({value}, {value})"
        if cpp == FieldDescriptor.CPPTYPE_STRING:
            return f"_bytes({value})" if field.type == FieldDescriptor.TYPE_BYTES else value
        if cpp in _INT64_TYPES:
            return f"str({value})"
        if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
            return f"_double({value})"
        if cpp == FieldDescriptor.CPPTYPE_FLOAT:
            return f"_float({value})"
        return value  # bool, int32, uint32: already what JSON wants

    def build(self) -> None:
        exec("\n".join(self._sources), self.namespace)  # code generated from descriptors, not input
        self._sources.clear()


def _has_presence(field: FieldDescriptor) -> bool:
    return field.has_presence and not field.is_repeated


def _access(target: str, field: FieldDescriptor) -> str:
    if field.name.isidentifier() and not keyword.iskeyword(field.name):
        return f"{target}.{field.name}"
    return f"getattr({target}, {field.name!r})"


def _with_fallback(fast: Printer, reference: Printer) -> Printer:
    def to_json(message: Message) -> Any:
        try:
            return fast(message)
        except Exception:  # anything unusual: json_format decides, result or error
            return reference(message)

    return to_json


def compile_printer(descriptor: Descriptor, *, field: str = "", fallback: bool = True) -> Printer:
    """proto3 JSON of a message of this type, or of one of its top-level fields (AIP response_body).

    fallback=False leaves out the json_format retry (tests check the generated code on its own)."""
    compiler = _Compiler()
    if field:
        target = descriptor.fields_by_name[field]
        name = compiler.field_function(target)
        json_name = target.json_name
        compiler.build()

        def reference(message: Message) -> Any:
            return reference_dict(message).get(json_name)

    else:
        name = compiler.message_function(descriptor)
        compiler.build()
        reference = reference_dict
    fast = compiler.namespace[name]
    return _with_fallback(fast, reference) if fallback else fast
