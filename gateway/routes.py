"""The route table, built from the descriptors: `google.api.http` plus the shop.api.v1 method options.

Every generated `shop.*.v1.*_pb2` module is imported, so an annotated RPC in any proto becomes a
route without route code. A route's access, rate-limit class, success status and header bindings
all come from its method options.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from collections.abc import Iterable

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from shop.api.v1 import options_pb2

from gateway.pathtemplate import PathTemplate, parse_template
from gateway.protojson import Printer, compile_printer

HTTP_METHODS = ("get", "put", "post", "delete", "patch")
# `fanout_services` arrived with the audit contract; read it only where the generated options have it
FANOUT_OPTION = getattr(options_pb2, "fanout_services", None)


class RouteConfigError(RuntimeError):
    """An annotation the gateway refuses to serve (fails start-up)."""


@dataclasses.dataclass(frozen=True)
class HeaderBinding:
    header: str  # lower-case
    field: str  # proto field path


@dataclasses.dataclass(frozen=True)
class Route:
    http_method: str  # upper-case
    path: PathTemplate
    body: str  # "" (no body), "*" or a top-level field name
    response_body: str
    method: MethodDescriptor
    access: int  # options_pb2.Access value
    rate_limit_class: str
    success_status: int
    header_bindings: tuple[HeaderBinding, ...]
    fanout_services: tuple[str, ...] = ()  # areas ("catalog", ...) that each serve a part of the answer

    @property
    def service(self) -> ServiceDescriptor:
        return self.method.containing_service

    @property
    def grpc_path(self) -> str:
        return f"/{self.service.full_name}/{self.method.name}"

    @functools.cached_property
    def request_class(self) -> type[Message]:
        return GetMessageClass(self.method.input_type)

    @functools.cached_property
    def response_class(self) -> type[Message]:
        return GetMessageClass(self.method.output_type)

    @functools.cached_property
    def response_printer(self) -> Printer:
        """The reply's proto3 JSON (only `response_body`'s field when the rule names one)."""
        return compile_printer(self.method.output_type, field=self.response_body)

    @property
    def operation_id(self) -> str:
        return f"{self.service.name}_{self.method.name}"


def import_generated_modules(package: str = "shop") -> list[object]:
    """Import every `<package>.<area>.v1.*_pb2` module so their descriptors are in the pool."""
    root = importlib.import_module(package)
    modules = []
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if info.name.endswith("_pb2"):
            modules.append(importlib.import_module(info.name))
    return modules


def annotated_services(modules: Iterable[object]) -> list[ServiceDescriptor]:
    services = []
    for module in modules:
        file = module.DESCRIPTOR  # type: ignore[attr-defined]
        for service in file.services_by_name.values():
            if any(m.GetOptions().HasExtension(annotations_pb2.http) for m in service.methods):
                services.append(service)
    return services


def _bindings(method: MethodDescriptor) -> list[tuple[str, http_pb2.HttpRule]]:
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    found = []
    for each in [rule, *rule.additional_bindings]:
        kind = each.WhichOneof("pattern")
        if kind in HTTP_METHODS:
            found.append((kind.upper(), each))
        elif kind == "custom":
            found.append((each.custom.kind.upper(), each))
        else:
            raise RouteConfigError(f"{method.full_name}: http rule without a pattern")
    return found


def _template_text(rule: http_pb2.HttpRule) -> str:
    kind = rule.WhichOneof("pattern")
    return rule.custom.path if kind == "custom" else getattr(rule, kind)


def _check_field_path(method: MethodDescriptor, path: str) -> None:
    message = method.input_type
    parts = path.split(".")
    for index, name in enumerate(parts):
        field = message.fields_by_name.get(name)
        if field is None:
            raise RouteConfigError(f"{method.full_name}: no request field {path!r}")
        if index < len(parts) - 1:
            if field.message_type is None or field.is_repeated:
                raise RouteConfigError(f"{method.full_name}: {path!r} does not name a nested field")
            message = field.message_type


def routes_for(service: ServiceDescriptor) -> list[Route]:
    routes = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        access = options.Extensions[options_pb2.access]
        if access == options_pb2.ACCESS_UNSPECIFIED:
            raise RouteConfigError(f"{method.full_name}: http rule without (shop.api.v1.access)")
        rate_class = options.Extensions[options_pb2.rate_limit_class] or "default"
        bindings = tuple(
            HeaderBinding(header=b.header.lower(), field=b.field)
            for b in options.Extensions[options_pb2.header_bindings]
        )
        for binding in bindings:
            _check_field_path(method, binding.field)
        fanout = tuple(options.Extensions[FANOUT_OPTION]) if FANOUT_OPTION is not None else ()
        for http_method, rule in _bindings(method):
            template = parse_template(_template_text(rule))
            for variable in template.variables:
                _check_field_path(method, variable)
            if rule.body not in ("", "*"):
                _check_field_path(method, rule.body)
            routes.append(
                Route(
                    http_method=http_method,
                    path=template,
                    body=rule.body,
                    response_body=rule.response_body,
                    method=method,
                    access=access,
                    rate_limit_class=rate_class,
                    success_status=options.Extensions[options_pb2.success_status] or 200,
                    header_bindings=bindings,
                    fanout_services=fanout,
                )
            )
    return routes


def build_routes(services: Iterable[ServiceDescriptor]) -> list[Route]:
    """All routes, most specific first; duplicate (method, template) pairs fail start-up."""
    routes = [route for service in services for route in routes_for(service)]
    seen: dict[tuple[str, str], str] = {}
    for route in routes:
        key = (route.http_method, route.path.template)
        if key in seen:
            raise RouteConfigError(f"{key} bound by both {seen[key]} and {route.method.full_name}")
        seen[key] = route.method.full_name
    return sorted(routes, key=lambda r: (-r.path.literal_count, len(r.path.variables)))


def area_address(area: str, settings: object) -> str:
    """SHOPMESH_<AREA>_ADDR, e.g. catalog -> settings.catalog_addr."""
    address = getattr(settings, f"{area}_addr", "") if area else ""
    if not address:
        raise RouteConfigError(f"no address for the {area!r} services: set SHOPMESH_{area.upper()}_ADDR")
    return address


def upstream_address(service: ServiceDescriptor, settings: object, overrides: dict[str, str]) -> str:
    """Where a service is served: SHOPMESH_SERVICE_ADDRS, else SHOPMESH_<AREA>_ADDR for shop.<area>.v1."""
    if service.full_name in overrides:
        return overrides[service.full_name]
    parts = service.full_name.split(".")
    area = parts[1] if len(parts) >= 4 and parts[0] == "shop" else ""
    address = getattr(settings, f"{area}_addr", "") if area else ""
    if not address:
        raise RouteConfigError(
            f"no address for {service.full_name}: set SHOPMESH_{area.upper()}_ADDR or SHOPMESH_SERVICE_ADDRS"
        )
    return address
