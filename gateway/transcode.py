"""HTTP request -> gRPC request message, and response message -> JSON, by proto3 JSON mapping.

Sources, applied in this order so the later ones win: the body (`*` = the whole message, or one
field), query parameters (only fields bound by neither path nor body; names are proto field names or
their JSON names, dotted for nested fields; repeat a parameter for a repeated field), path variables,
then header bindings. Every source goes through json_format with unknown fields refused, which gives
typed conversion (int64 from strings, enums by name or number, Timestamps, FieldMasks...) and a 400
for anything that does not fit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, NoReturn

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from gateway.errors import GatewayError, bad_request
from gateway.routes import Route

# Well-known types whose proto3 JSON form is a single string/number, so a query parameter can set them.
SCALAR_JSON_MESSAGES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BoolValue",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
    }
)
_BOOL_WORDS = {"true": True, "1": True, "false": False, "0": False}
PAGE_SIZE_FIELD = "page_size"


def _field_by_any_name(message: Descriptor, name: str) -> FieldDescriptor | None:
    field = message.fields_by_name.get(name)
    if field is not None:
        return field
    for candidate in message.fields:
        if candidate.json_name == name:
            return candidate
    return None


def _is_bool(field: FieldDescriptor) -> bool:
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    return field.message_type is not None and field.message_type.full_name == "google.protobuf.BoolValue"


def _resolve(message: Descriptor, dotted: str, *, source: str) -> list[FieldDescriptor]:
    """The fields along a dotted path (proto or JSON names); 400 when the path names no settable field."""
    fields: list[FieldDescriptor] = []
    current = message
    parts = dotted.split(".")
    for index, part in enumerate(parts):
        field = _field_by_any_name(current, part)
        if field is None:
            raise bad_request(f"unknown {source} {dotted!r}", field=dotted)
        fields.append(field)
        last = index == len(parts) - 1
        is_message = (
            field.message_type is not None and field.message_type.full_name not in SCALAR_JSON_MESSAGES
        )
        if last and is_message:
            raise bad_request(f"{source} {dotted!r} names a message; set its fields instead", field=dotted)
        if not last and (not is_message or field.is_repeated):
            raise bad_request(f"unknown {source} {dotted!r}", field=dotted)
        if is_message:
            current = field.message_type
    return fields


_PARSE_ERRORS = (json_format.ParseError, ValueError, TypeError, RecursionError)


def _parse_into(message: Message, data: Mapping[str, Any], *, what: str) -> None:
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except _PARSE_ERRORS as exc:
        try:
            found = _failing_field(message.DESCRIPTOR, data, "")
        except RecursionError:  # nested deeper than the interpreter allows: no field to name
            found = None
        if found is None:  # e.g. two members of one oneof: no single field to blame
            raise bad_request(f"invalid {what}: {exc}") from None
        field, description = found
        raise bad_request(f"{field}: {description}", field=field, description=description) from None


def _failing_field(message: Descriptor, data: Mapping[str, Any], prefix: str) -> tuple[str, str] | None:
    """(proto field path, what is wrong) for the first value of `data` that does not parse: ParseDict
    says only "Failed to parse quantity field: invalid literal for int()...", and a client needs the
    field's name and what it expects. Only runs once parsing has failed, so the happy path pays nothing."""
    message_class = message_factory.GetMessageClass(message)
    for key, value in data.items():
        field = _field_by_any_name(message, key)
        if field is None:
            known = ", ".join(sorted(f.json_name for f in message.fields))
            return f"{prefix}{key}", f"unknown field; known fields: {known}"
        try:
            json_format.ParseDict({key: value}, message_class(), ignore_unknown_fields=False)
            continue
        except _PARSE_ERRORS:
            pass
        path = f"{prefix}{field.name}"
        nested = field.message_type
        if nested is not None and nested.full_name not in _JSON_VALUE_MESSAGES and not _is_map(field):
            if field.is_repeated and isinstance(value, list):
                for index, element in enumerate(value):
                    if not isinstance(element, Mapping):
                        return f"{path}[{index}]", "must be a JSON object"
                    found = _failing_field(nested, element, f"{path}[{index}].")
                    if found is not None:
                        return found
            elif not field.is_repeated and isinstance(value, Mapping):
                found = _failing_field(nested, value, f"{path}.")
                if found is not None:
                    return found
        return path, _expectation(field, value)
    return None


# Message types whose JSON form is not an object of their fields (a string, number, any value...).
_JSON_VALUE_MESSAGES = SCALAR_JSON_MESSAGES | {
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Any",
}
_INTEGER_KINDS = {
    FieldDescriptor.CPPTYPE_INT32: "a 32-bit integer",
    FieldDescriptor.CPPTYPE_INT64: "a 64-bit integer",
    FieldDescriptor.CPPTYPE_UINT32: "a non-negative 32-bit integer",
    FieldDescriptor.CPPTYPE_UINT64: "a non-negative 64-bit integer",
}
_WELL_KNOWN_EXPECTATIONS = {
    "google.protobuf.Timestamp": "an RFC 3339 timestamp such as 2026-01-31T12:00:00Z",
    "google.protobuf.Duration": "a duration in seconds such as 1.5s",
    "google.protobuf.FieldMask": "a comma-separated list of field names",
}


def _expectation(field: FieldDescriptor, value: Any) -> str:
    """What a field accepts, said for a client (the refused value is not echoed back)."""
    if field.is_repeated and not isinstance(value, list | dict):
        return "must be a JSON object" if _is_map(field) else "must be a JSON array"
    nested = field.message_type
    if nested is not None:
        if nested.full_name in _WELL_KNOWN_EXPECTATIONS:
            return f"must be {_WELL_KNOWN_EXPECTATIONS[nested.full_name]}"
        if nested.full_name in SCALAR_JSON_MESSAGES:  # a wrapper (Int32Value...): as its `value`
            return _expectation(nested.fields_by_name["value"], value)
        return "has an invalid key or value" if _is_map(field) else "must be a JSON object"
    if field.enum_type is not None:
        return "must be one of " + ", ".join(v.name for v in field.enum_type.values)
    if field.cpp_type in _INTEGER_KINDS:
        return f"must be {_INTEGER_KINDS[field.cpp_type]}"
    if field.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return "must be a number"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "must be true or false"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return "must be base64-encoded bytes"
    return "must be a string (valid Unicode)"


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _nest(path: Sequence[FieldDescriptor], value: Any, target: dict[str, Any]) -> None:
    for field in path[:-1]:
        target = target.setdefault(field.json_name, {})
    target[path[-1].json_name] = value


_INTEGER_WRAPPERS = {
    "google.protobuf.Int32Value",
    "google.protobuf.Int64Value",
    "google.protobuf.UInt32Value",
    "google.protobuf.UInt64Value",
}


_FLOAT_WRAPPERS = {"google.protobuf.DoubleValue", "google.protobuf.FloatValue"}
_ASCII_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|-?Infinity|NaN")


def _is_float(field: FieldDescriptor) -> bool:
    if field.cpp_type in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return True
    return field.message_type is not None and field.message_type.full_name in _FLOAT_WRAPPERS


def _is_integer(field: FieldDescriptor) -> bool:
    if field.cpp_type in _DIRECT_INTEGERS:
        return True
    return field.message_type is not None and field.message_type.full_name in _INTEGER_WRAPPERS


def _scalar(field: FieldDescriptor, raw: str, name: str, where: str) -> Any:
    """`raw` for ParseDict; `name` as the client sent it, `where` the proto field path."""
    if _is_bool(field):
        word = raw.strip().lower()
        if word not in _BOOL_WORDS:
            raise bad_request(f"{name!r} must be true or false", field=name)
        return _BOOL_WORDS[word]
    # ParseDict converts number strings with int() and float(), which also take "1_0", " 7", "\t7"
    # and other scripts' digits (U+0667 for 7): /v1/products/1_0 fetched product 10
    return _check_number(field, raw, where, exact_only=True)


def _query_dict(route: Route, query: Sequence[tuple[str, str]], bound: set[str]) -> dict[str, Any]:
    if query and route.body == "*":
        raise bad_request(f"{route.http_method} {route.path.template} takes no query parameters")
    data: dict[str, Any] = {}
    seen: dict[str, list[str]] = {}
    descriptor = route.method.input_type
    for name, raw in query:
        path = _resolve(descriptor, name, source="query parameter")
        proto_path = ".".join(field.name for field in path)
        if any(proto_path == b or proto_path.startswith(b + ".") for b in bound):
            raise bad_request(f"query parameter {name!r} is bound by the path or body", field=name)
        values = seen.setdefault(proto_path, [])
        values.append(raw)
        field = path[-1]
        if field.is_repeated:
            _nest(path, [_scalar(field, v, name, proto_path) for v in values], data)
        elif len(values) > 1:
            raise bad_request(f"query parameter {name!r} given more than once", field=name)
        else:
            _nest(path, _scalar(field, raw, name, proto_path), data)
    return data


def _printable(text: str) -> str:
    """`text` with anything outside ASCII escaped, to name a field in an error."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


# JSON may spell a lone UTF-16 surrogate ("\ud800"); Python keeps it in the str, and neither protobuf
# (a SystemError from the field lookup) nor UTF-8 (the error body echoing it) can take one: a 500.
# json.loads joins a proper pair into one character, so any surrogate left is unpaired.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_unpaired_surrogates(value: Any, path: str) -> None:
    def refuse(where: str) -> NoReturn:
        where = _printable(where) or "body"
        raise bad_request(f"{where}: text with an unpaired UTF-16 surrogate", field=where)

    if isinstance(value, str):
        if _SURROGATE.search(value):
            refuse(path)
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if _SURROGATE.search(key):
                refuse(where)
            _refuse_unpaired_surrogates(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_unpaired_surrogates(item, f"{path}[{index}]")


class _JsonObject(dict):
    """A parsed JSON object; `repeated` is a key it held more than once (json.loads keeps the last
    copy, so {"quantity": 1, "quantity": 100} meant 100 while a proxy or log reading the first saw
    1; protobuf's own JSON parser refuses such objects too)."""

    repeated: str | None = None


def _json_object(pairs: list[tuple[str, Any]]) -> _JsonObject:
    result = _JsonObject(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                result.repeated = key
                break
            seen.add(key)
    return result


class _JsonFloat(float):
    """A JSON number with a fraction or exponent, keeping its text: an integer field given 1e2 or
    9007199254740993.0 (proto3 JSON allows both) is read from the digits, not through the float."""

    text: str

    @classmethod
    def of(cls, text: str) -> _JsonFloat:
        number = cls(text)
        number.text = text
        return number


def _not_json(word: str) -> NoReturn:
    # json.loads takes bare NaN, Infinity and -Infinity, which are not JSON (proto3 JSON spells
    # them as the strings "NaN", "Infinity" and "-Infinity")
    raise ValueError(f"{word} is not JSON")


def _refuse_repeated_key(data: Any, where: str) -> None:
    repeated = getattr(data, "repeated", None)
    if repeated is not None:
        where = _printable(where)
        raise bad_request(f"{where}: given more than once in one object", field=where)


def _check_body(message: Descriptor, data: dict[str, Any], prefix: str) -> None:
    """Walk a body's objects along the message's fields (naming each by its proto path): refuse an
    object with a repeated key, and check number strings. Proto3 JSON lets a number field be a
    string ("7"); ParseDict converts it with int() and float(), which also take "1_0", " 7" and
    other scripts' digits (U+0667 for 7): {"quantity": "1_0"} put 10 in a cart. Such strings are
    refused as the path and query ones are (_scalar); an integer with a fraction or exponent that
    names a whole number ("1e2", "10.0", which proto3 JSON allows) is replaced by its exact digits,
    where ParseDict went through a float (9007199254740993.0 read as ...992)."""
    repeated = getattr(data, "repeated", None)
    if repeated is not None:
        field = _field_by_any_name(message, repeated)
        _refuse_repeated_key(data, f"{prefix}{field.name if field else repeated}")
    named: set[int] = set()
    for key, value in data.items():
        field = _field_by_any_name(message, key)
        if field is None:
            continue  # ParseDict names the unknown field
        where = f"{prefix}{field.name}"
        if field.number in named:  # {"productId": 7, "product_id": 8}: the last one won, silently
            where = _printable(where)
            raise bad_request(
                f"{where}: given more than once in one object (as {field.json_name} and {field.name})",
                field=where,
            )
        named.add(field.number)
        if value is None:
            continue
        if _is_map(field):
            if isinstance(value, dict):
                _refuse_repeated_key(value, where)
                key_field = field.message_type.fields_by_name["key"]
                value_field = field.message_type.fields_by_name["value"]
                for map_key, item in value.items():
                    _check_number(key_field, map_key, f"{where}[{map_key!r}]", exact_only=True)
                    value[map_key] = _check_element(value_field, item, f"{where}[{map_key!r}]")
        elif field.is_repeated:
            if isinstance(value, list):
                for index, item in enumerate(value):
                    value[index] = _check_element(field, item, f"{where}[{index}]")
        else:
            data[key] = _check_element(field, value, where)


def _check_element(field: FieldDescriptor, value: Any, where: str) -> Any:
    nested = field.message_type
    if nested is not None and nested.full_name not in _JSON_VALUE_MESSAGES:
        if isinstance(value, dict):
            _check_body(nested, value, f"{where}.")
        return value
    if isinstance(value, dict):
        _refuse_repeated_key(value, where)  # Struct, Value, Any: named by their field
    return _check_number(field, value, where)


_WHOLE_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def _check_number(field: FieldDescriptor, value: Any, where: str, *, exact_only: bool = False) -> Any:
    """The value ParseDict should get for a number field given as a string (see _check_body):
    plain ASCII digits, or with `exact_only` False also an integer written with a fraction or
    exponent that names a whole number. A 400 naming `where` otherwise."""
    if isinstance(value, _JsonFloat):
        if _is_integer(field):
            exact = _whole(value.text)
            if exact is not None:
                return exact
        return value  # ParseDict refuses a fraction for an integer field, naming it
    if not isinstance(value, str):
        return value
    if _is_integer(field):
        if _ASCII_INTEGER.fullmatch(value):
            return value
        if not exact_only and _WHOLE_NUMBER.fullmatch(value):
            exact = _whole(value)
            if exact is not None:
                return str(exact)
    elif not _is_float(field) or _ASCII_NUMBER.fullmatch(value):
        return value
    description = _expectation(field, value)
    raise bad_request(f"{where}: {description}", field=where, description=description)


def _whole(text: str) -> int | None:
    """The integer a number's text names exactly ("1e2", "10.0"), or None (a fraction, or too big)."""
    number = Decimal(text)
    # adjusted(): the power of ten of its first digit; past 20 no 64-bit integer is that large,
    # and int() of 1e100000000 would build a hundred-million-digit number
    if number.is_finite() and number.adjusted() <= 20 and number == number.to_integral_value():
        return int(number)
    return None


def _body_dict(route: Route, body: bytes) -> dict[str, Any]:
    if not route.body:
        if body.strip():
            raise bad_request(f"{route.http_method} {route.path.template} takes no request body")
        return {}
    repeats: list[_JsonObject] = []
    if not body.strip():
        parsed: Any = {}
    else:

        def json_object(pairs: list[tuple[str, Any]]) -> _JsonObject:
            result = _json_object(pairs)
            if result.repeated is not None:
                repeats.append(result)
            return result

        try:
            # strict UTF-8 (RFC 8259; a BOM is ignored): json.loads of bytes guessed UTF-16/32 and
            # decoded with surrogatepass, so a lone surrogate sent as raw bytes (ED A0 80) reached
            # the field lookups, which raised SystemError: a 500 on any route with a body
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise bad_request("request body is not valid UTF-8") from None
        try:
            parsed = json.loads(
                text, object_pairs_hook=json_object, parse_constant=_not_json, parse_float=_JsonFloat.of
            )
        except (ValueError, RecursionError):
            raise bad_request("request body is not valid JSON") from None
        if _SURROGATE_ESCAPE.search(body):
            _refuse_unpaired_surrogates(parsed, "")
    if route.body == "*":
        if not isinstance(parsed, dict):
            raise bad_request("request body must be a JSON object")
        data = parsed
    else:
        data = {route.method.input_type.fields_by_name[route.body].json_name: parsed}
    try:
        _check_body(route.method.input_type, data, "")
    except RecursionError:
        raise bad_request("request body is nested too deeply") from None
    if repeats:  # in an object the field walk does not reach (inside a Struct, or a list of them)
        key = _printable(repeats[0].repeated or "")
        raise bad_request(f"{key}: given more than once in one object", field=key)
    return data


def build_request(
    route: Route,
    *,
    path_params: Mapping[str, str],
    query: Sequence[tuple[str, str]],
    body: bytes,
    headers: Mapping[str, str],
    max_page_size: int,
) -> Message:
    """The request message for a matched route; GatewayError (400) on anything malformed."""
    request = route.request_class()
    descriptor = route.method.input_type
    bound = set(path_params) | ({route.body} if route.body not in ("", "*") else set())
    body_data = _body_dict(route, body)
    if body_data and route.header_bindings:
        _refuse_header_fields_in_body(route, descriptor, body_data)
    if body_data:  # ParseDict of {} sets nothing
        _parse_into(request, body_data, what="request body")
    if query:
        query_message = route.request_class()
        _parse_into(query_message, _query_dict(route, query, bound), what="query parameters")
        request.MergeFrom(query_message)
    for sources in (
        path_params,
        {b.field: headers[b.header] for b in route.header_bindings if b.header in headers},
    ):
        if not sources or _assign_directly(request, descriptor, sources):
            continue
        data: dict[str, Any] = {}
        for name, raw in sources.items():
            path = _resolve(descriptor, name, source="field")
            _nest(path, _scalar(path[-1], raw, name, ".".join(f.name for f in path)), data)
        overriding = route.request_class()
        _parse_into(overriding, data, what="path or header value")
        for name in sources:
            _clear(request, name)
        request.MergeFrom(overriding)
    _check_page_size(request, max_page_size)
    return request


def _refuse_header_fields_in_body(route: Route, descriptor: Descriptor, body_data: Mapping[str, Any]) -> None:
    """A field a header feeds (Idempotency-Key) comes from that header only: a key in the body would
    let a client that forgot the header through (the OpenAPI document has no such body field)."""
    for binding in route.header_bindings:
        field = _field_by_any_name(descriptor, binding.field)
        if field is not None and (field.json_name in body_data or field.name in body_data):
            header = "-".join(part.capitalize() for part in binding.header.split("-"))
            description = f"send it as the {header} header, not in the body"
            raise bad_request(f"{field.json_name}: {description}", field=field.name, description=description)


_DIRECT_INTEGERS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_ASCII_INTEGER = re.compile(r"-?[0-9]+")


def _assign_directly(request: Message, descriptor: Descriptor, sources: Mapping[str, str]) -> bool:
    """Set path/header values that are plain top-level strings or in-range ASCII integers without
    ParseDict, which would give exactly these values (clearing the field and merging one in equals
    setting it); False, with nothing set, when any value needs ParseDict's conversion or its error."""
    values = []
    for name, raw in sources.items():
        field = descriptor.fields_by_name.get(name)
        if field is None or field.is_repeated:
            return False
        if field.type == FieldDescriptor.TYPE_STRING:
            if json_format._UNPAIRED_SURROGATE_PATTERN.search(raw):
                return False
            values.append((name, raw))
            continue
        limits = _DIRECT_INTEGERS.get(field.cpp_type)
        if limits is None or len(raw) > 24 or not _ASCII_INTEGER.fullmatch(raw):
            return False
        number = int(raw)
        if not limits[0] <= number <= limits[1]:
            return False
        values.append((name, number))
    for name, value in values:
        setattr(request, name, value)
    return True


def _clear(message: Message, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for name in parents:
        if not message.HasField(name):
            return
        message = getattr(message, name)
    message.ClearField(last)


def _check_page_size(request: Message, max_page_size: int) -> None:
    """AIP-158: negative is an error, above the maximum is lowered to the maximum."""
    field = request.DESCRIPTOR.fields_by_name.get(PAGE_SIZE_FIELD)
    if field is None or field.cpp_type not in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64):
        return
    size = getattr(request, PAGE_SIZE_FIELD)
    if size < 0:
        raise bad_request("page_size must not be negative", field=PAGE_SIZE_FIELD)
    if size > max_page_size:
        setattr(request, PAGE_SIZE_FIELD, max_page_size)


def response_json(route: Route, response: Message) -> Any:
    """proto3 JSON (lowerCamelCase names, fields without presence always printed): gateway.protojson."""
    return route.response_printer(response)


__all__ = ["GatewayError", "build_request", "response_json"]
