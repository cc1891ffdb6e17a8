"""Catalog domain: products, categories, their rules and typed errors. Imports neither grpc nor SQL."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from meshkit.errors import AlreadyExists, InvalidArgument, NotFound

MAX_TITLE = 500
MAX_SLUG = 500
MAX_DESCRIPTION = 20_000
MAX_BRAND = 200
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_NAME = 100
MAX_ATTRIBUTE_VALUE = 200
MAX_PRICE = Decimal("99999999.99")  # NUMERIC(10,2)
MAX_BATCH_GET = 1000
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
CENT = Decimal("0.01")
TENTH = Decimal("0.1")
SLUG_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Product fields an admin may write (update_mask paths); the rest are output-only.
WRITABLE_FIELDS = (
    "seller_id",
    "title",
    "slug",
    "description",
    "category_id",
    "price",
    "rating",
    "review_count",
    "brand",
    "attributes",
)
OUTPUT_ONLY_FIELDS = ("id", "category_path", "is_active", "create_time", "update_time")


class ProductNotFound(NotFound):
    reason = "PRODUCT_NOT_FOUND"

    def __init__(self, product_id: int) -> None:
        super().__init__(f"product {product_id} not found", metadata={"product_id": product_id})


class SlugTaken(AlreadyExists):
    reason = "SLUG_ALREADY_EXISTS"

    def __init__(self, slug: str) -> None:
        super().__init__(f"slug {slug!r} is taken", metadata={"slug": slug})


class CategoryNotFound(InvalidArgument):
    reason = "CATEGORY_NOT_FOUND"

    def __init__(self, field: str, value: object) -> None:
        super().__init__(field, f"unknown category {value!r}", metadata={field.split(".")[-1]: value})


@dataclasses.dataclass(frozen=True)
class Attribute:
    name: str
    value: str


@dataclasses.dataclass(frozen=True)
class Category:
    id: int
    parent_id: int | None
    name: str
    slug: str
    path: str
    depth: int


@dataclasses.dataclass(frozen=True)
class ProductDraft:
    """The writable fields of a product, validated."""

    seller_id: int
    title: str
    price: Decimal
    slug: str = ""
    description: str = ""
    category_id: int | None = None
    rating: Decimal = Decimal("0.0")
    review_count: int = 0
    brand: str = ""
    attributes: tuple[Attribute, ...] = ()


@dataclasses.dataclass(frozen=True)
class Product:
    id: int
    seller_id: int
    title: str
    slug: str
    description: str
    category_id: int | None
    category_path: str
    price: Decimal
    rating: Decimal
    review_count: int
    is_active: bool
    brand: str
    attributes: tuple[Attribute, ...]
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


# -- validation --------------------------------------------------------------------------------------


def clean_text(field: str, value: str, *, max_len: int, required: bool = False) -> str:
    """Trimmed text without control characters (PostgreSQL refuses NUL), within max_len."""
    if _CONTROL.search(value):
        raise InvalidArgument(field, "must not contain control characters")
    value = value.strip()
    if required and not value:
        raise InvalidArgument(field, "is required")
    if len(value) > max_len:
        raise InvalidArgument(field, f"at most {max_len} characters")
    return value


def validate_price(field: str, value: Decimal) -> Decimal:
    if not value.is_finite() or value < 0:
        raise InvalidArgument(field, "must be a non-negative amount")
    if value != value.quantize(CENT):
        raise InvalidArgument(field, "whole cents only")
    if value > MAX_PRICE:
        raise InvalidArgument(field, f"at most {MAX_PRICE}")
    return value.quantize(CENT)


def validate_rating(field: str, value: float) -> Decimal:
    try:
        rating = Decimal(repr(float(value))).quantize(TENTH, rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError) as exc:
        raise InvalidArgument(field, "must be a number") from exc
    if not rating.is_finite() or rating < 0 or rating > 5:
        raise InvalidArgument(field, "must be between 0 and 5")
    return rating


def validate_attributes(field: str, pairs: Iterable[tuple[str, str]]) -> tuple[Attribute, ...]:
    out = []
    for index, (name, value) in enumerate(pairs):
        out.append(
            Attribute(
                clean_text(f"{field}[{index}].name", name, max_len=MAX_ATTRIBUTE_NAME, required=True),
                clean_text(f"{field}[{index}].value", value, max_len=MAX_ATTRIBUTE_VALUE),
            )
        )
    if len(out) > MAX_ATTRIBUTES:
        raise InvalidArgument(field, f"at most {MAX_ATTRIBUTES} attributes")
    return tuple(out)


def validate_draft(draft: ProductDraft, *, prefix: str = "product") -> ProductDraft:
    """Normalise and check every writable field; raises InvalidArgument naming the field."""
    if draft.seller_id <= 0:
        raise InvalidArgument(f"{prefix}.seller_id", "is required")
    if draft.category_id is not None and draft.category_id < 0:
        raise InvalidArgument(f"{prefix}.category_id", "must be positive (0: uncategorised)")
    if draft.review_count < 0:
        raise InvalidArgument(f"{prefix}.review_count", "must be >= 0")
    slug = clean_text(f"{prefix}.slug", draft.slug, max_len=MAX_SLUG)
    if slug and not SLUG_RE.match(slug):
        raise InvalidArgument(f"{prefix}.slug", "lowercase letters, digits and single dashes only")
    return dataclasses.replace(
        draft,
        title=clean_text(f"{prefix}.title", draft.title, max_len=MAX_TITLE, required=True),
        slug=slug,
        description=clean_text(f"{prefix}.description", draft.description, max_len=MAX_DESCRIPTION),
        category_id=draft.category_id or None,
        price=validate_price(f"{prefix}.price", draft.price),
        rating=validate_rating(f"{prefix}.rating", float(draft.rating)),
        brand=clean_text(f"{prefix}.brand", draft.brand, max_len=MAX_BRAND),
        attributes=validate_attributes(f"{prefix}.attributes", ((a.name, a.value) for a in draft.attributes)),
    )


def update_fields(paths: Sequence[str]) -> tuple[str, ...]:
    """The writable fields an update mask names; empty or '*' means all of them."""
    if not paths or list(paths) == ["*"]:
        return WRITABLE_FIELDS
    fields = []
    for path in paths:
        if path in OUTPUT_ONLY_FIELDS:
            raise InvalidArgument("update_mask", f"{path} is output-only")
        if path not in WRITABLE_FIELDS:
            raise InvalidArgument("update_mask", f"unknown field {path!r}")
        if path not in fields:
            fields.append(path)
    return tuple(fields)


def merge_update(current: ProductDraft, incoming: ProductDraft, fields: Sequence[str]) -> ProductDraft:
    """The product's writable fields after applying `incoming` for the masked `fields`."""
    return dataclasses.replace(current, **{name: getattr(incoming, name) for name in fields})


# -- slugs -------------------------------------------------------------------------------------------


def slugify(title: str, *, max_len: int = MAX_SLUG - 12) -> str:
    """ASCII slug of a title ('Café Noir 2-Pack!' -> 'cafe-noir-2-pack'), leaving room for a suffix."""
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    slug = slug[:max_len].rstrip("-")
    return slug or "product"


def first_free_slug(base: str, taken: Iterable[str]) -> str:
    """`base` if free, else base-2, base-3, ... (the lowest free suffix)."""
    used = set(taken)
    if base not in used:
        return base
    n = 2
    while f"{base}-{n}" in used:
        n += 1
    return f"{base}-{n}"


# -- page tokens -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ListCursor:
    """Where the next ListProducts page starts (newest first: created_at desc, id desc)."""

    category_id: int
    created_at: dt.datetime
    product_id: int


def encode_page_token(cursor: ListCursor) -> str:
    raw = json.dumps(
        {"c": cursor.category_id, "t": cursor.created_at.isoformat(), "i": cursor.product_id},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(token: str, *, category_id: int) -> ListCursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        cursor = ListCursor(int(data["c"]), dt.datetime.fromisoformat(data["t"]), int(data["i"]))
    # OverflowError: json reads Infinity, and int(inf) overflows; RecursionError: a deeply nested
    # JSON array ("W1tb..." repeated), which was an INTERNAL
    except (
        binascii.Error,
        ValueError,
        KeyError,
        TypeError,
        UnicodeDecodeError,
        OverflowError,
        RecursionError,
    ) as exc:
        raise InvalidArgument("page_token", "malformed page token") from exc
    if cursor.category_id != category_id:
        raise InvalidArgument("page_token", "page token belongs to another category_id")
    return cursor


def page_size_of(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size", "must be >= 0")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def batch_ids(product_ids: Sequence[int]) -> list[int]:
    """Distinct ids in first-mention order, checked."""
    if len(product_ids) > MAX_BATCH_GET:
        raise InvalidArgument("product_ids", f"at most {MAX_BATCH_GET}")
    seen: dict[int, None] = {}
    for pid in product_ids:
        if pid <= 0:
            raise InvalidArgument("product_ids", "ids must be positive")
        seen.setdefault(pid, None)
    return list(seen)
