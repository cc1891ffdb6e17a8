"""The compiled proto -> JSON converters equal json_format.MessageToDict (the reference) on random
messages of every type the gateway serves, and of test types holding what the shop protos do not use
yet: every well-known type, maps of every key kind, bytes, float32, oneofs, proto2 closed enums and
extensions, recursion, json_name overrides."""

from __future__ import annotations

import math
import random
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from google.protobuf import (  # noqa: F401 - the well-known types' files must be in the pool
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    json_format,
    struct_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.app import load_api_routes
from gateway.protojson import compile_printer, reference_dict
from gateway.routes import import_generated_modules

TEST_PROTO3 = """
syntax = "proto3";
package gatewaytest.v1;
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum Colour { COLOUR_UNSPECIFIED = 0; COLOUR_RED = 1; COLOUR_BLUE = 2; }

message Leaf { string name = 1; int64 size = 2; }

message Everything {
  double d = 1; float f = 2; int32 i32 = 3; int64 i64 = 4; uint32 u32 = 5; uint64 u64 = 6;
  sint32 s32 = 7; sint64 s64 = 8; fixed32 fx32 = 9; fixed64 fx64 = 10; sfixed32 sfx32 = 11;
  sfixed64 sfx64 = 12; bool b = 13; string s = 14; bytes by = 15; Colour colour = 16;
  optional double opt_d = 17; optional int64 opt_i64 = 18; optional string opt_s = 19;
  optional Colour opt_colour = 20; optional bool opt_b = 21;
  repeated double r_d = 30; repeated float r_f = 31; repeated int64 r_i64 = 32; repeated uint64 r_u64 = 33;
  repeated string r_s = 34; repeated bytes r_by = 35; repeated Colour r_colour = 36; repeated bool r_b = 37;
  repeated int32 r_i32 = 38; repeated Leaf r_leaf = 39;
  Leaf leaf = 40; Everything child = 41; repeated Everything children = 42;
  map<string, string> m_ss = 50; map<int32, Leaf> m_i32_leaf = 51; map<int64, double> m_i64_d = 52;
  map<uint64, Colour> m_u64_colour = 53; map<bool, bytes> m_b_by = 54; map<string, google.protobuf.Value> m_value = 55;
  map<sint64, google.protobuf.Timestamp> m_s64_ts = 56; map<fixed32, float> m_fx32_f = 57;
  oneof choice { string c_s = 60; Leaf c_leaf = 61; int64 c_i64 = 62; google.protobuf.Timestamp c_ts = 63; }
  google.protobuf.Timestamp ts = 70; google.protobuf.Duration dur = 71; google.protobuf.FieldMask mask = 72;
  google.protobuf.Struct st = 73; google.protobuf.Value val = 74; google.protobuf.ListValue lst = 75;
  google.protobuf.Any any = 76; google.protobuf.Empty empty = 77;
  google.protobuf.DoubleValue w_d = 80; google.protobuf.FloatValue w_f = 81; google.protobuf.Int64Value w_i64 = 82;
  google.protobuf.UInt64Value w_u64 = 83; google.protobuf.Int32Value w_i32 = 84; google.protobuf.UInt32Value w_u32 = 85;
  google.protobuf.BoolValue w_b = 86; google.protobuf.StringValue w_s = 87; google.protobuf.BytesValue w_by = 88;
  repeated google.protobuf.Timestamp r_ts = 90; repeated google.protobuf.Duration r_dur = 91;
  repeated google.protobuf.Any r_any = 92; repeated google.protobuf.Int64Value r_w_i64 = 93;
  string custom = 94 [json_name = "renamedField"]; int32 class = 95; string from = 96;
}
"""

TEST_PROTO2 = """
syntax = "proto2";
package gatewaytest.v1;
enum Closed { CLOSED_ONE = 1; CLOSED_TWO = 2; }
message Legacy {
  optional int32 count = 1 [default = 7]; optional string label = 2 [default = "x"];
  optional Closed closed = 3; repeated Closed closeds = 4; required int64 id = 5;
  extensions 100 to 200;
}
message Plain { optional Closed closed = 1; repeated Closed closeds = 2; optional int32 count = 3 [default = 7]; }
message Holder { optional Legacy legacy = 1; repeated Legacy legacies = 2; optional Plain plain = 3; map<string, Plain> plains = 4; }
extend Legacy { optional string note = 100; }
"""


def _compile_test_protos() -> None:
    """protoc (grpcio-tools) -> descriptor set -> the default pool, where Any resolves type URLs."""
    pool = descriptor_pool.Default()
    try:
        pool.FindMessageTypeByName("gatewaytest.v1.Everything")
        return
    except KeyError:
        pass
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    work = Path(__import__("tempfile").mkdtemp(prefix="protojson-"))
    (work / "gatewaytest").mkdir()
    (work / "gatewaytest" / "everything.proto").write_text(TEST_PROTO3)
    (work / "gatewaytest" / "legacy.proto").write_text(TEST_PROTO2)
    out = work / "set.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{work}",
            f"-I{include}",
            f"--descriptor_set_out={out}",
            "gatewaytest/everything.proto",
            "gatewaytest/legacy.proto",
        ],
        check=True,
    )
    for file in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(file)


_compile_test_protos()
EVERYTHING = GetMessageClass(descriptor_pool.Default().FindMessageTypeByName("gatewaytest.v1.Everything"))
HOLDER = GetMessageClass(descriptor_pool.Default().FindMessageTypeByName("gatewaytest.v1.Holder"))
LEGACY = GetMessageClass(descriptor_pool.Default().FindMessageTypeByName("gatewaytest.v1.Legacy"))

SPECIAL_DOUBLES = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-7, 1e300, 5e-324, 19.99]
TEXT = ["", "plain", "ünïcødé ✓", 'line\nbreak "quoted" \\', "\u2028", "日本語", "😀"]


class Filler:
    """Random values for every field kind, extremes and specials included."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def scalar(self, field: FieldDescriptor) -> object:
        rng = self.rng
        t = field.type
        if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            if self.chance(0.3):
                return rng.choice(SPECIAL_DOUBLES)
            value = rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-12, 12)
            return value if t == FieldDescriptor.TYPE_DOUBLE else max(-3e38, min(3e38, value))
        bits = {
            FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
            FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
            FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
            FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
            FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
            FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
            FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
            FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
            FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
            FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
        }
        if t in bits:
            low, high = bits[t]
            return rng.choice([low, high, 0, 1, -1 if low < 0 else 2, rng.randint(low, high)])
        if t == FieldDescriptor.TYPE_BOOL:
            return self.chance(0.5)
        if t == FieldDescriptor.TYPE_STRING:
            return rng.choice(TEXT) + str(rng.randint(0, 99))
        if t == FieldDescriptor.TYPE_BYTES:
            return rng.randbytes(rng.randint(0, 12))
        if t == FieldDescriptor.TYPE_ENUM:
            numbers = list(field.enum_type.values_by_number)
            if not field.enum_type.is_closed and self.chance(0.15):
                return rng.choice([99, -5, 2**31 - 1])  # open enum: unknown numbers are kept
            return rng.choice(numbers)
        raise AssertionError(field.full_name)

    def wkt(self, message: Message, depth: int) -> bool:
        """Fill a well-known type its own way; False when the message is not one."""
        rng = self.rng
        name = message.DESCRIPTOR.full_name
        if name == "google.protobuf.Timestamp":
            message.seconds = rng.choice(
                [-62135596800, 253402300799, 0, -1, rng.randint(-62135596800, 253402300799)]
            )
            message.nanos = rng.choice(
                [0, 1, 999999999, 5_000_000, 120_000, 123_456_789, rng.randint(0, 999999999)]
            )
            return True
        if name == "google.protobuf.Duration":
            seconds = rng.randint(-315576000000, 315576000000)
            nanos = rng.choice([0, 1_000_000, 1000, rng.randint(0, 999999999)])
            message.seconds, message.nanos = seconds, (-nanos if seconds < 0 else nanos)
            return True
        if name == "google.protobuf.FieldMask":
            message.paths.extend(
                rng.sample(["title", "price.units", "category_id", "seller_id"], rng.randint(0, 3))
            )
            return True
        if name == "google.protobuf.Struct":
            for i in range(rng.randint(0, 3)):
                self.value(message.fields[f"k{i}"], depth)
            return True
        if name == "google.protobuf.Value":
            self.value(message, depth)
            return True
        if name == "google.protobuf.ListValue":
            for _ in range(rng.randint(0, 3)):
                self.value(message.values.add(), depth)
            return True
        if name == "google.protobuf.Any":
            if self.chance(0.8):
                inner = rng.choice([LEGACY, Timestamp, EVERYTHING])()
                if inner.DESCRIPTOR.full_name == "gatewaytest.v1.Legacy":
                    inner.id = rng.randint(0, 10)
                else:
                    self.fill(inner, depth + 1)
                message.Pack(inner)
            return True
        return False

    def value(self, value: Message, depth: int) -> None:
        kind = self.rng.choice(
            ["null", "number", "string", "bool", "struct", "list"]
            if depth < 3
            else ["number", "string", "bool", "null"]
        )
        if kind == "null":
            value.null_value = 0
        elif kind == "number":
            value.number_value = self.rng.uniform(-1e9, 1e9)
        elif kind == "string":
            value.string_value = self.rng.choice(TEXT)
        elif kind == "bool":
            value.bool_value = self.chance(0.5)
        elif kind == "struct":
            self.wkt(value.struct_value, depth + 1)
        else:
            self.wkt(value.list_value, depth + 1)

    def fill(self, message: Message, depth: int = 0) -> Message:
        if self.wkt(message, depth):
            return message
        descriptor: Descriptor = message.DESCRIPTOR
        for field in descriptor.fields:
            if field.is_required:
                if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                    self.fill(getattr(message, field.name), depth + 1)
                else:
                    setattr(message, field.name, self.scalar(field))
                continue
            if not self.chance(0.7):
                continue
            if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE and depth >= 3:
                continue
            if json_format._IsMapEntry(field):
                key_field = field.message_type.fields_by_name["key"]
                value_field = field.message_type.fields_by_name["value"]
                target = getattr(message, field.name)
                for _ in range(self.rng.randint(0, 3)):
                    key = self.scalar(key_field)
                    if value_field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                        self.fill(target[key], depth + 1)
                    else:
                        target[key] = self.scalar(value_field)
            elif field.is_repeated:
                target = getattr(message, field.name)
                for _ in range(self.rng.randint(0, 3)):
                    if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                        self.fill(target.add(), depth + 1)
                    else:
                        target.append(self.scalar(field))
            elif field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                self.fill(getattr(message, field.name), depth + 1)
            else:
                setattr(message, field.name, self.scalar(field))
        return message


def served_types() -> list[Descriptor]:
    """Every message type of the shop protos (responses, requests, events), and the test types."""
    found: dict[str, Descriptor] = {}

    def walk(descriptor: Descriptor) -> None:
        if descriptor.full_name in found or descriptor.GetOptions().map_entry:
            return
        found[descriptor.full_name] = descriptor
        for nested in descriptor.nested_types:
            walk(nested)

    for module in import_generated_modules():
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():  # type: ignore[attr-defined]
            walk(descriptor)
    for cls in (EVERYTHING, HOLDER, LEGACY):
        walk(cls.DESCRIPTOR)
    return sorted(found.values(), key=lambda d: d.full_name)


def same_as_reference(message: Message, strict, printer) -> None:
    """The generated code alone gives json_format's dict; where json_format fails, so does the printer."""
    try:
        expected = reference_dict(message)
    except json_format.Error as error:
        with pytest.raises(type(error), match="^" + re.escape(str(error)) + "$"):
            printer(message)
        return
    assert strict(message) == expected
    assert printer(message) == expected


@pytest.mark.parametrize("descriptor", served_types(), ids=lambda d: d.full_name)
def test_compiled_printer_equals_json_format(descriptor: Descriptor) -> None:
    strict = compile_printer(descriptor, fallback=False)
    printer = compile_printer(descriptor)
    cls = GetMessageClass(descriptor)
    same_as_reference(cls(), strict, printer)  # all defaults
    filler = Filler(seed=zlib.crc32(descriptor.full_name.encode()))
    for _ in range(60):
        same_as_reference(filler.fill(cls()), strict, printer)


def test_every_route_response_matches_json_format() -> None:
    for route in load_api_routes():
        filler = Filler(seed=len(route.path.template))
        for _ in range(20):
            reply = filler.fill(route.response_class())
            assert route.response_printer(reply) == reference_dict(reply)
            strict = compile_printer(route.method.output_type, fallback=False)
            assert strict(reply) == reference_dict(reply)


def test_response_body_field_is_its_json_or_null() -> None:
    printer = compile_printer(HOLDER.DESCRIPTOR, field="legacy")
    assert printer(HOLDER()) is None
    holder = HOLDER()
    holder.legacy.id = 3
    assert printer(holder) == {"id": "3", "closeds": []} == reference_dict(holder)["legacy"]
    repeated = compile_printer(EVERYTHING.DESCRIPTOR, field="r_i64")
    assert repeated(EVERYTHING(r_i64=[1, -2])) == ["1", "-2"]


def test_special_values_and_formats() -> None:
    printer = compile_printer(EVERYTHING.DESCRIPTOR, fallback=False)
    message = EVERYTHING(
        d=math.nan, f=math.inf, r_d=[-math.inf, 0.1], i64=2**63 - 1, by=b"\x00\xff", colour=7
    )
    message.ts.FromJsonString("0001-01-01T00:00:00.120Z")
    message.dur.FromJsonString("-1.000000100s")
    message.mask.paths.extend(["price.units", "title"])
    message.m_b_by[True] = b"x"
    data = printer(message)
    assert (data["d"], data["f"], data["rD"]) == ("NaN", "Infinity", ["-Infinity", 0.1])
    assert (data["i64"], data["by"], data["colour"]) == ("9223372036854775807", "AP8=", 7)
    assert (data["ts"], data["dur"], data["mask"]) == (
        "0001-01-01T00:00:00.120Z",
        "-1.000000100s",
        "price.units,title",
    )
    assert data["mBBy"] == {"true": "eA=="}
    assert data["renamedField"] == "" and data["class"] == 0 and "optD" not in data and "leaf" not in data
    assert data == reference_dict(message)


def test_invalid_values_raise_what_json_format_raises() -> None:
    printer = compile_printer(EVERYTHING.DESCRIPTOR)
    broken = EVERYTHING()
    broken.ts.seconds = 253402300800  # one second past 9999-12-31
    with pytest.raises(json_format.SerializeToJsonError):
        printer(broken)
    value = EVERYTHING()
    value.val.number_value = math.inf  # Value cannot hold Infinity in JSON
    with pytest.raises(json_format.SerializeToJsonError):
        printer(value)


def test_timestamps_format_like_timestamp_to_json_string() -> None:
    rng = random.Random(7)
    stamp = Timestamp()
    printer = compile_printer(Timestamp.DESCRIPTOR, fallback=False)
    for _ in range(20000):
        stamp.seconds = rng.randint(-62135596800, 253402300799)
        stamp.nanos = rng.choice(
            [0, rng.randint(0, 999) * 1_000_000, rng.randint(0, 999999) * 1000, rng.randint(0, 999999999)]
        )
        assert printer(stamp) == stamp.ToJsonString()
