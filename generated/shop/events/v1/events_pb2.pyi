import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from shop.catalog.v1 import catalog_pb2 as _catalog_pb2
from shop.common.v1 import money_pb2 as _money_pb2
from shop.order.v1 import order_pb2 as _order_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StockMovement(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOCK_MOVEMENT_UNSPECIFIED: _ClassVar[StockMovement]
    STOCK_MOVEMENT_RECEIVE: _ClassVar[StockMovement]
    STOCK_MOVEMENT_ADJUST: _ClassVar[StockMovement]
    STOCK_MOVEMENT_RESERVE: _ClassVar[StockMovement]
    STOCK_MOVEMENT_RELEASE: _ClassVar[StockMovement]
    STOCK_MOVEMENT_EXPIRE: _ClassVar[StockMovement]
    STOCK_MOVEMENT_COMMIT: _ClassVar[StockMovement]
    STOCK_MOVEMENT_RESTOCK: _ClassVar[StockMovement]
STOCK_MOVEMENT_UNSPECIFIED: StockMovement
STOCK_MOVEMENT_RECEIVE: StockMovement
STOCK_MOVEMENT_ADJUST: StockMovement
STOCK_MOVEMENT_RESERVE: StockMovement
STOCK_MOVEMENT_RELEASE: StockMovement
STOCK_MOVEMENT_EXPIRE: StockMovement
STOCK_MOVEMENT_COMMIT: StockMovement
STOCK_MOVEMENT_RESTOCK: StockMovement

class InventoryEvent(_message.Message):
    __slots__ = ("event_id", "product_id", "version", "occurred_at", "stock_level_changed", "reservation_expired")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    STOCK_LEVEL_CHANGED_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    product_id: int
    version: int
    occurred_at: _timestamp_pb2.Timestamp
    stock_level_changed: StockLevelChanged
    reservation_expired: ReservationExpired
    def __init__(self, event_id: _Optional[str] = ..., product_id: _Optional[int] = ..., version: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stock_level_changed: _Optional[_Union[StockLevelChanged, _Mapping]] = ..., reservation_expired: _Optional[_Union[ReservationExpired, _Mapping]] = ...) -> None: ...

class StockLevelChanged(_message.Message):
    __slots__ = ("available", "in_stock", "quantity", "reserved", "movement", "warehouse_id")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    MOVEMENT_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    available: int
    in_stock: bool
    quantity: int
    reserved: int
    movement: StockMovement
    warehouse_id: int
    def __init__(self, available: _Optional[int] = ..., in_stock: _Optional[bool] = ..., quantity: _Optional[int] = ..., reserved: _Optional[int] = ..., movement: _Optional[_Union[StockMovement, str]] = ..., warehouse_id: _Optional[int] = ...) -> None: ...

class ReservationExpired(_message.Message):
    __slots__ = ("reservation_id", "owner", "quantity", "warehouse_id")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    WAREHOUSE_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    owner: str
    quantity: int
    warehouse_id: int
    def __init__(self, reservation_id: _Optional[str] = ..., owner: _Optional[str] = ..., quantity: _Optional[int] = ..., warehouse_id: _Optional[int] = ...) -> None: ...

class OrderEvent(_message.Message):
    __slots__ = ("event_id", "order_id", "version", "occurred_at", "order_created", "order_status_changed")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    ORDER_CREATED_FIELD_NUMBER: _ClassVar[int]
    ORDER_STATUS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    order_id: str
    version: int
    occurred_at: _timestamp_pb2.Timestamp
    order_created: OrderCreated
    order_status_changed: OrderStatusChanged
    def __init__(self, event_id: _Optional[str] = ..., order_id: _Optional[str] = ..., version: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., order_created: _Optional[_Union[OrderCreated, _Mapping]] = ..., order_status_changed: _Optional[_Union[OrderStatusChanged, _Mapping]] = ...) -> None: ...

class OrderCreated(_message.Message):
    __slots__ = ("user_id", "lines", "total")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    lines: _containers.RepeatedCompositeFieldContainer[_order_pb2.OrderLine]
    total: _money_pb2.Money
    def __init__(self, user_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[_order_pb2.OrderLine, _Mapping]]] = ..., total: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class OrderStatusChanged(_message.Message):
    __slots__ = ("from_status", "to_status", "user_id")
    FROM_STATUS_FIELD_NUMBER: _ClassVar[int]
    TO_STATUS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    from_status: _order_pb2.OrderStatus
    to_status: _order_pb2.OrderStatus
    user_id: str
    def __init__(self, from_status: _Optional[_Union[_order_pb2.OrderStatus, str]] = ..., to_status: _Optional[_Union[_order_pb2.OrderStatus, str]] = ..., user_id: _Optional[str] = ...) -> None: ...

class CatalogEvent(_message.Message):
    __slots__ = ("event_id", "product_id", "version", "occurred_at", "product_upserted", "product_deleted", "recommendations_updated")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_UPSERTED_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_DELETED_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATIONS_UPDATED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    product_id: int
    version: int
    occurred_at: _timestamp_pb2.Timestamp
    product_upserted: ProductUpserted
    product_deleted: ProductDeleted
    recommendations_updated: RecommendationsUpdated
    def __init__(self, event_id: _Optional[str] = ..., product_id: _Optional[int] = ..., version: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., product_upserted: _Optional[_Union[ProductUpserted, _Mapping]] = ..., product_deleted: _Optional[_Union[ProductDeleted, _Mapping]] = ..., recommendations_updated: _Optional[_Union[RecommendationsUpdated, _Mapping]] = ...) -> None: ...

class ProductUpserted(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: _catalog_pb2.Product
    def __init__(self, product: _Optional[_Union[_catalog_pb2.Product, _Mapping]] = ...) -> None: ...

class ProductDeleted(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RecommendationsUpdated(_message.Message):
    __slots__ = ("product_ids",)
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    product_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, product_ids: _Optional[_Iterable[int]] = ...) -> None: ...
