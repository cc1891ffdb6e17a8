import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from shop.api.v1 import options_pb2 as _options_pb2
from shop.common.v1 import money_pb2 as _money_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AlsoBoughtSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALSO_BOUGHT_SOURCE_UNSPECIFIED: _ClassVar[AlsoBoughtSource]
    ALSO_BOUGHT_SOURCE_CACHE: _ClassVar[AlsoBoughtSource]
    ALSO_BOUGHT_SOURCE_CO_PURCHASE: _ClassVar[AlsoBoughtSource]
    ALSO_BOUGHT_SOURCE_CATEGORY_TOP_SELLERS: _ClassVar[AlsoBoughtSource]
ALSO_BOUGHT_SOURCE_UNSPECIFIED: AlsoBoughtSource
ALSO_BOUGHT_SOURCE_CACHE: AlsoBoughtSource
ALSO_BOUGHT_SOURCE_CO_PURCHASE: AlsoBoughtSource
ALSO_BOUGHT_SOURCE_CATEGORY_TOP_SELLERS: AlsoBoughtSource

class Product(_message.Message):
    __slots__ = ("id", "seller_id", "title", "slug", "description", "category_id", "category_path", "price", "rating", "review_count", "is_active", "brand", "attributes", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    SELLER_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SLUG_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_PATH_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    REVIEW_COUNT_FIELD_NUMBER: _ClassVar[int]
    IS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: int
    seller_id: int
    title: str
    slug: str
    description: str
    category_id: int
    category_path: str
    price: _money_pb2.Money
    rating: float
    review_count: int
    is_active: bool
    brand: str
    attributes: _containers.RepeatedCompositeFieldContainer[ProductAttribute]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., seller_id: _Optional[int] = ..., title: _Optional[str] = ..., slug: _Optional[str] = ..., description: _Optional[str] = ..., category_id: _Optional[int] = ..., category_path: _Optional[str] = ..., price: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., rating: _Optional[float] = ..., review_count: _Optional[int] = ..., is_active: _Optional[bool] = ..., brand: _Optional[str] = ..., attributes: _Optional[_Iterable[_Union[ProductAttribute, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ProductAttribute(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Category(_message.Message):
    __slots__ = ("id", "parent_id", "name", "slug", "path", "depth")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SLUG_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    id: int
    parent_id: int
    name: str
    slug: str
    path: str
    depth: int
    def __init__(self, id: _Optional[int] = ..., parent_id: _Optional[int] = ..., name: _Optional[str] = ..., slug: _Optional[str] = ..., path: _Optional[str] = ..., depth: _Optional[int] = ...) -> None: ...

class GetProductRequest(_message.Message):
    __slots__ = ("product_id",)
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    product_id: int
    def __init__(self, product_id: _Optional[int] = ...) -> None: ...

class GetProductResponse(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: Product
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...

class BatchGetProductsRequest(_message.Message):
    __slots__ = ("product_ids",)
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    product_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, product_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class BatchGetProductsResponse(_message.Message):
    __slots__ = ("products", "not_found_product_ids")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[Product]
    not_found_product_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, products: _Optional[_Iterable[_Union[Product, _Mapping]]] = ..., not_found_product_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ListProductsRequest(_message.Message):
    __slots__ = ("category_id", "page_size", "page_token")
    CATEGORY_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    category_id: int
    page_size: int
    page_token: str
    def __init__(self, category_id: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProductsResponse(_message.Message):
    __slots__ = ("products", "next_page_token")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[Product]
    next_page_token: str
    def __init__(self, products: _Optional[_Iterable[_Union[Product, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SearchProductsRequest(_message.Message):
    __slots__ = ("q", "category_path", "min_price", "max_price", "brands", "min_rating", "in_stock", "page")
    Q_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_PATH_FIELD_NUMBER: _ClassVar[int]
    MIN_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_FIELD_NUMBER: _ClassVar[int]
    BRANDS_FIELD_NUMBER: _ClassVar[int]
    MIN_RATING_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    q: str
    category_path: str
    min_price: float
    max_price: float
    brands: _containers.RepeatedScalarFieldContainer[str]
    min_rating: float
    in_stock: bool
    page: int
    def __init__(self, q: _Optional[str] = ..., category_path: _Optional[str] = ..., min_price: _Optional[float] = ..., max_price: _Optional[float] = ..., brands: _Optional[_Iterable[str]] = ..., min_rating: _Optional[float] = ..., in_stock: _Optional[bool] = ..., page: _Optional[int] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("product", "in_stock", "score")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    product: Product
    in_stock: bool
    score: float
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ..., in_stock: _Optional[bool] = ..., score: _Optional[float] = ...) -> None: ...

class FacetBucket(_message.Message):
    __slots__ = ("value", "count")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    value: str
    count: int
    def __init__(self, value: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class PriceRangeBucket(_message.Message):
    __slots__ = ("key", "from_price", "to_price", "count")
    KEY_FIELD_NUMBER: _ClassVar[int]
    FROM_PRICE_FIELD_NUMBER: _ClassVar[int]
    TO_PRICE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    key: str
    from_price: float
    to_price: float
    count: int
    def __init__(self, key: _Optional[str] = ..., from_price: _Optional[float] = ..., to_price: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class SearchFacets(_message.Message):
    __slots__ = ("categories", "brands", "price_ranges", "in_stock_count")
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    BRANDS_FIELD_NUMBER: _ClassVar[int]
    PRICE_RANGES_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_COUNT_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedCompositeFieldContainer[FacetBucket]
    brands: _containers.RepeatedCompositeFieldContainer[FacetBucket]
    price_ranges: _containers.RepeatedCompositeFieldContainer[PriceRangeBucket]
    in_stock_count: int
    def __init__(self, categories: _Optional[_Iterable[_Union[FacetBucket, _Mapping]]] = ..., brands: _Optional[_Iterable[_Union[FacetBucket, _Mapping]]] = ..., price_ranges: _Optional[_Iterable[_Union[PriceRangeBucket, _Mapping]]] = ..., in_stock_count: _Optional[int] = ...) -> None: ...

class SearchProductsResponse(_message.Message):
    __slots__ = ("results", "facets", "fallback", "total_hits", "page", "page_size")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    FACETS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    TOTAL_HITS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    facets: SearchFacets
    fallback: bool
    total_hits: int
    page: int
    page_size: int
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., facets: _Optional[_Union[SearchFacets, _Mapping]] = ..., fallback: _Optional[bool] = ..., total_hits: _Optional[int] = ..., page: _Optional[int] = ..., page_size: _Optional[int] = ...) -> None: ...

class GetAlsoBoughtRequest(_message.Message):
    __slots__ = ("product_id", "limit")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    product_id: int
    limit: int
    def __init__(self, product_id: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class AlsoBoughtRecommendation(_message.Message):
    __slots__ = ("product", "score")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    product: Product
    score: float
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ..., score: _Optional[float] = ...) -> None: ...

class GetAlsoBoughtResponse(_message.Message):
    __slots__ = ("recommendations", "source")
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    recommendations: _containers.RepeatedCompositeFieldContainer[AlsoBoughtRecommendation]
    source: AlsoBoughtSource
    def __init__(self, recommendations: _Optional[_Iterable[_Union[AlsoBoughtRecommendation, _Mapping]]] = ..., source: _Optional[_Union[AlsoBoughtSource, str]] = ...) -> None: ...

class ListCategoriesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCategoriesResponse(_message.Message):
    __slots__ = ("categories",)
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedCompositeFieldContainer[Category]
    def __init__(self, categories: _Optional[_Iterable[_Union[Category, _Mapping]]] = ...) -> None: ...

class CreateProductRequest(_message.Message):
    __slots__ = ("product", "request_id")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    product: Product
    request_id: str
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateProductResponse(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: Product
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...

class UpdateProductRequest(_message.Message):
    __slots__ = ("product_id", "product", "update_mask")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    product_id: int
    product: Product
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, product_id: _Optional[int] = ..., product: _Optional[_Union[Product, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateProductResponse(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: Product
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...

class DeleteProductRequest(_message.Message):
    __slots__ = ("product_id",)
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    product_id: int
    def __init__(self, product_id: _Optional[int] = ...) -> None: ...

class DeleteProductResponse(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: Product
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...
