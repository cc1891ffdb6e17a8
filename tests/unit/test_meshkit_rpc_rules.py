"""The interceptor's precomputed parts: access rules per method, the NUL-scan skip, request ids, GC tuning."""

from __future__ import annotations

import dataclasses
import gc
import re

import pytest
from shop.catalog.v1 import catalog_pb2
from shop.order.v1 import order_pb2

from meshkit.access import access_policy
from meshkit.context import Principal, new_request_id
from meshkit.errors import PermissionDenied, Unauthenticated
from meshkit.gc_tuning import tune_gc
from meshkit.interceptors import may_hold_strings, nul_field
from meshkit.resp import _Incomplete, encode_command, parse_reply
from meshkit.settings import CommonSettings

CATALOG = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"]
ANONYMOUS = Principal("anonymous", ("anonymous",))
USER = Principal("u-1", ("user",))
ADMIN = Principal("root", ("admin",))
SERVICE = Principal("order_svc", ("service",))


def test_access_rules_follow_the_proto_option_for_every_kind_of_method() -> None:
    check = access_policy([CATALOG])
    get_product = "/shop.catalog.v1.CatalogService/GetProduct"  # ACCESS_ANONYMOUS
    create = "/shop.catalog.v1.CatalogService/CreateProduct"  # ACCESS_ADMIN
    batch = "/shop.catalog.v1.CatalogService/BatchGetProducts"  # no option: internal
    for principal in (ANONYMOUS, USER, ADMIN, SERVICE):
        check(get_product, principal)
    check(create, ADMIN)
    for principal in (ANONYMOUS, USER, SERVICE):
        with pytest.raises(PermissionDenied):
            check(create, principal)
    check(batch, SERVICE)
    check(batch, ADMIN)
    for principal in (ANONYMOUS, USER):
        with pytest.raises(PermissionDenied):
            check(batch, principal)
    with pytest.raises(PermissionDenied):  # a method the table does not know is internal
        check("/shop.catalog.v1.CatalogService/NoSuchMethod", USER)


def test_user_methods_refuse_the_anonymous_subject() -> None:
    check = access_policy([order_pb2.DESCRIPTOR.services_by_name["OrderService"]])
    get_order = "/shop.order.v1.OrderService/GetOrder"  # ACCESS_USER
    for principal in (USER, ADMIN, SERVICE):
        check(get_order, principal)
    with pytest.raises(Unauthenticated):
        check(get_order, ANONYMOUS)


def test_the_nul_scan_is_skipped_only_for_types_that_cannot_hold_a_string() -> None:
    assert not may_hold_strings(catalog_pb2.GetProductRequest.DESCRIPTOR)  # one int64
    assert may_hold_strings(catalog_pb2.SearchProductsRequest.DESCRIPTOR)
    assert may_hold_strings(catalog_pb2.CreateProductRequest.DESCRIPTOR)  # strings inside Product
    # a nested string is still found where the scan runs
    request = catalog_pb2.CreateProductRequest(product=catalog_pb2.Product(title="a\x00b"))
    assert nul_field(request) == "product.title"


def test_request_ids_are_32_hex_digits_and_distinct() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_gc_tuning_follows_the_settings() -> None:
    before = gc.get_threshold()
    try:
        tune_gc(dataclasses.replace(CommonSettings(), gc_freeze=False, gc_gen0_threshold=12_345))
        assert gc.get_threshold() == (12_345, before[1], before[2])
        tune_gc(dataclasses.replace(CommonSettings(), gc_freeze=True, gc_gen0_threshold=0))
        assert gc.get_threshold()[0] == 12_345  # 0 leaves the threshold alone
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_resp_replies_parse_whole_or_not_at_all() -> None:
    assert encode_command(("HMGET", "k", 1)) == b"*3\r\n$5\r\nHMGET\r\n$1\r\nk\r\n$1\r\n1\r\n"
    reply = b"*3\r\n$3\r\nabc\r\n$-1\r\n:42\r\n+OK\r\n"
    value, pos = parse_reply(reply, 0)
    assert value == [b"abc", None, 42] and reply[pos:] == b"+OK\r\n"
    assert parse_reply(reply, pos) == (b"OK", len(reply))
    for cut in range(1, len(reply) - 5):  # every prefix of the array is incomplete, never wrong
        with pytest.raises(_Incomplete):
            parse_reply(reply[:cut], 0)
    error, _ = parse_reply(b"-WRONGTYPE no\r\n", 0)
    assert isinstance(error, Exception) and "WRONGTYPE" in str(error)
    assert parse_reply(b"$0\r\n\r\n", 0) == (b"", 6)
