"""OpenAPI 3.0 document generated from the same route table and message descriptors the gateway serves.

Schemas follow the proto3 JSON mapping the gateway speaks: lowerCamelCase property names, 64-bit
integers as decimal strings, enums by name, well-known types in their JSON forms. OUTPUT_ONLY fields
are readOnly, REQUIRED fields are required, unknown properties are refused (additionalProperties
false), exactly as the transcoder behaves.
"""

from __future__ import annotations

import copy
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from shop.api.v1 import options_pb2

from gateway.routes import Route
from gateway.transcode import SCALAR_JSON_MESSAGES

INT64_PATTERN = r"^-?[0-9]{1,19}$"
UINT64_PATTERN = r"^[0-9]{1,20}$"
ERROR_REF = {"$ref": "#/components/schemas/Error"}
MAX_QUERY_DEPTH = 3

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "pattern": INT64_PATTERN, "description": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "pattern": INT64_PATTERN, "description": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "pattern": INT64_PATTERN, "description": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "pattern": UINT64_PATTERN, "description": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "pattern": UINT64_PATTERN, "description": "uint64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 4294967295},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 4294967295},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}

_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "comma-separated lowerCamelCase paths"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": _SCALARS[FieldDescriptor.TYPE_DOUBLE],
    "google.protobuf.FloatValue": _SCALARS[FieldDescriptor.TYPE_FLOAT],
    "google.protobuf.Int64Value": _SCALARS[FieldDescriptor.TYPE_INT64],
    "google.protobuf.UInt64Value": _SCALARS[FieldDescriptor.TYPE_UINT64],
    "google.protobuf.Int32Value": _SCALARS[FieldDescriptor.TYPE_INT32],
    "google.protobuf.UInt32Value": _SCALARS[FieldDescriptor.TYPE_UINT32],
    "google.protobuf.BoolValue": _SCALARS[FieldDescriptor.TYPE_BOOL],
    "google.protobuf.StringValue": _SCALARS[FieldDescriptor.TYPE_STRING],
    "google.protobuf.BytesValue": _SCALARS[FieldDescriptor.TYPE_BYTES],
}

ERROR_SCHEMA = {
    "type": "object",
    "description": "google.rpc.Status in its HTTP JSON form; details hold ErrorInfo (reason, metadata).",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message"],
            "properties": {
                "code": {"type": "integer", "description": "the HTTP status"},
                "status": {"type": "string", "description": "the gRPC status code name"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"@type": {"type": "string"}},
                        "required": ["@type"],
                        "additionalProperties": True,
                    },
                },
            },
        }
    },
}


def _behaviors(field: FieldDescriptor) -> set[int]:
    return set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def _annotate(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Add keywords next to a schema; a $ref gets them through allOf (OpenAPI 3.0 ignores $ref siblings)."""
    extra = {key: value for key, value in extra.items() if value}
    if not extra:
        return schema
    if "$ref" in schema:
        return {"allOf": [schema], **extra}
    return {**schema, **extra}


class _SchemaBuilder:
    def __init__(self, comments: dict[str, str]) -> None:
        self.components: dict[str, dict[str, Any]] = {}
        self.comments = comments

    def ref(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return copy.deepcopy(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # placeholder: breaks recursion
            self.components[message.full_name] = self.message_schema(message)
        return {"$ref": f"#/components/schemas/{message.full_name}"}

    def message_schema(self, message: Descriptor, *, exclude: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in message.fields:
            if field.name in exclude:
                continue
            behaviors = _behaviors(field)
            output_only = field_behavior_pb2.OUTPUT_ONLY in behaviors
            properties[field.json_name] = _annotate(
                self.field_schema(field), readOnly=output_only, description=self.comments.get(field.full_name)
            )
            if field_behavior_pb2.REQUIRED in behaviors and not output_only:
                required.append(field.json_name)
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if message.full_name in self.comments:
            schema["description"] = self.comments[message.full_name]
        if required:
            schema["required"] = required
        return schema

    def value_schema(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            return self.ref(field.message_type)
        if field.enum_type is not None:
            return {"type": "string", "enum": [value.name for value in field.enum_type.values]}
        return copy.deepcopy(_SCALARS[field.type])

    def field_schema(self, field: FieldDescriptor) -> dict[str, Any]:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            return {
                "type": "object",
                "additionalProperties": self.value_schema(entry.fields_by_name["value"]),
            }
        if field.is_repeated:
            return {"type": "array", "items": self.value_schema(field)}
        return self.value_schema(field)


def _query_parameters(
    builder: _SchemaBuilder, message: Descriptor, prefix: str, bound: set[str], depth: int
) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for field in message.fields:
        name = f"{prefix}{field.name}"
        behaviors = _behaviors(field)
        if name in bound or field_behavior_pb2.OUTPUT_ONLY in behaviors:
            continue
        nested = field.message_type
        if nested is not None and nested.full_name not in SCALAR_JSON_MESSAGES:
            if not field.is_repeated and not nested.GetOptions().map_entry and depth < MAX_QUERY_DEPTH:
                params.extend(_query_parameters(builder, nested, f"{name}.", bound, depth + 1))
            continue
        param: dict[str, Any] = {"name": name, "in": "query", "schema": builder.field_schema(field)}
        if field.full_name in builder.comments:
            param["description"] = builder.comments[field.full_name]
        if field.is_repeated:
            param.update(style="form", explode=True)
        if field_behavior_pb2.REQUIRED in behaviors:
            param["required"] = True
        params.append(param)
    return params


def _operation(builder: _SchemaBuilder, route: Route) -> dict[str, Any]:
    request = route.method.input_type
    header_fields = {b.field for b in route.header_bindings}
    params: list[dict[str, Any]] = []
    for variable in route.path.variables:
        field = request.fields_by_name[variable.split(".")[0]]
        leaf = field
        for part in variable.split(".")[1:]:
            leaf = leaf.message_type.fields_by_name[part]
        params.append(
            {"name": variable, "in": "path", "required": True, "schema": builder.field_schema(leaf)}
        )
    for binding in route.header_bindings:
        field = request.fields_by_name.get(binding.field)
        required = field is not None and field_behavior_pb2.REQUIRED in _behaviors(field)
        params.append(
            {
                "name": binding.header.title(),
                "in": "header",
                "required": required,
                "description": f"sets the request field `{binding.field}`",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    bound = set(route.path.variables) | header_fields
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": f"{route.service.name}.{route.method.name}",
        "tags": [route.service.name],
        "x-grpc-method": route.grpc_path,
        **(
            {"description": builder.comments[route.method.full_name]}
            if route.method.full_name in builder.comments
            else {}
        ),
        "x-rate-limit-class": route.rate_limit_class,
    }
    if route.body == "*":
        top = {name.split(".")[0] for name in bound}
        body_schema = builder.message_schema(request, exclude=top)
        operation["requestBody"] = {
            "required": bool(body_schema.get("required")),
            "content": {"application/json": {"schema": body_schema}},
        }
    elif route.body:
        body_field = request.fields_by_name[route.body]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": builder.field_schema(body_field)}},
        }
        params.extend(_query_parameters(builder, request, "", bound | {route.body}, 0))
    else:
        params.extend(_query_parameters(builder, request, "", bound, 0))
    if params:
        operation["parameters"] = params
    response_schema = builder.ref(route.method.output_type)
    if route.response_body:
        response_schema = builder.field_schema(route.method.output_type.fields_by_name[route.response_body])
    success_headers: dict[str, Any] = {"X-Request-Id": {"schema": {"type": "string"}}}
    if route.header_bindings:
        success_headers["Idempotent-Replayed"] = {
            "description": "`true` when this is the stored response of an earlier request with the same key",
            "schema": {"type": "string", "enum": ["true"]},
        }
    operation["responses"] = {
        str(route.success_status): {
            "description": "OK" if route.success_status == 200 else "Created",
            "headers": success_headers,
            "content": {"application/json": {"schema": response_schema}},
        },
        **_error_responses(route),
    }
    if route.access == options_pb2.ACCESS_ANONYMOUS:
        operation["security"] = [{}, {"bearerAuth": []}]
    else:
        operation["security"] = [{"bearerAuth": []}]
    return operation


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    if headers:
        response["headers"] = headers
    return response


def _error_responses(route: Route) -> dict[str, Any]:
    responses = {
        "400": _error("Invalid argument (transcoding or service validation)"),
        "401": _error("Missing, expired or invalid bearer token"),
        "429": _error("Rate limited", {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}),
        "default": _error("Error in the google.rpc.Status JSON shape"),
    }
    if route.access == options_pb2.ACCESS_ADMIN:
        responses["403"] = _error("The admin role is required")
    return responses


def build_openapi(
    routes: list[Route],
    *,
    comments: dict[str, str] | None = None,
    title: str = "Shopmesh API",
    version: str = "v1",
) -> dict[str, Any]:
    """The document; `comments` (gateway.protodoc) adds the protos' prose as descriptions."""
    builder = _SchemaBuilder(comments or {})
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(routes, key=lambda r: (r.path.template, r.http_method)):
        paths.setdefault(route.path.openapi_path, {})[route.http_method.lower()] = _operation(builder, route)
    schemas = dict(sorted(builder.components.items()))
    schemas["Error"] = ERROR_SCHEMA
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": version,
            "description": "Generated from the google.api.http annotations of the Shopmesh protos.",
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": name, **({"description": builder.comments[full]} if full in builder.comments else {})}
            for name, full in sorted({(r.service.name, r.service.full_name) for r in routes})
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
