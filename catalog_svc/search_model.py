"""Search domain: the validated query, the seed's facets and result types. No I/O.

Both engines (OpenSearch and the PostgreSQL fallback) take a `SearchQuery` and return a
`SearchPage`, so the same rules (text semantics, filters, ranking factors, facet definitions,
paging) hold whichever answers.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import NamedTuple

from catalog_svc.model import Product
from meshkit.errors import InvalidArgument

PAGE_SIZE = 20
MAX_QUERY_LENGTH = 200
MAX_BRANDS = 50
MAX_BRAND_LENGTH = 200
MAX_CATEGORY_PATH = 1000
CATEGORY_FACET_SIZE = 20
BRAND_FACET_SIZE = 50
# Ranking (function_score): relevance x (1 + 2*in_stock + sqrt(1.2*rating) + log10(1 + 1.1*reviews)).
IN_STOCK_WEIGHT = 2.0
RATING_FACTOR = 1.2
REVIEW_FACTOR = 1.1

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"\s+")


@dataclasses.dataclass(frozen=True)
class PriceRange:
    key: str
    low: Decimal | None  # inclusive
    high: Decimal | None  # exclusive

    def contains(self, price: Decimal) -> bool:
        return (self.low is None or price >= self.low) and (self.high is None or price < self.high)


# The seed's five ranges, half-open [low, high).
PRICE_RANGES = (
    PriceRange("under_25", None, Decimal(25)),
    PriceRange("25_to_50", Decimal(25), Decimal(50)),
    PriceRange("50_to_100", Decimal(50), Decimal(100)),
    PriceRange("100_to_200", Decimal(100), Decimal(200)),
    PriceRange("over_200", Decimal(200), None),
)


@dataclasses.dataclass(frozen=True)
class SearchQuery:
    q: str = ""
    category_path: str = ""
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    brands: tuple[str, ...] = ()
    min_rating: Decimal | None = None
    in_stock: bool = False
    page: int = 0

    @property
    def query_type(self) -> str:
        """Metric label: free text or browsing with filters only."""
        return "text" if self.q else "browse"

    def filters_for_log(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.category_path:
            out["category_path"] = self.category_path
        if self.min_price is not None:
            out["min_price"] = str(self.min_price)
        if self.max_price is not None:
            out["max_price"] = str(self.max_price)
        if self.brands:
            out["brands"] = list(self.brands)
        if self.min_rating is not None:
            out["min_rating"] = str(self.min_rating)
        if self.in_stock:
            out["in_stock"] = True
        out["page"] = self.page
        return out


# The OpenSearch path hands a hit's product over as the index holds it: the API message, encoded and
# base64'd (search_os.document's product_wire), which convert.py parses straight into the response.
ProductWire = str


class UnresolvedProduct(NamedTuple):
    """A hit whose document predates product_wire: SearchService reads the product from PostgreSQL."""

    id: int


class SearchHit(NamedTuple):  # a tuple: ~3x cheaper to build than a frozen dataclass, 20 per page
    product: Product | ProductWire | UnresolvedProduct
    in_stock: bool
    score: float


@dataclasses.dataclass(frozen=True)
class Facets:
    categories: tuple[tuple[str, int], ...]
    brands: tuple[tuple[str, int], ...]
    price_ranges: tuple[tuple[PriceRange, int], ...]
    in_stock_count: int


@dataclasses.dataclass(frozen=True)
class SearchPage:
    hits: tuple[SearchHit, ...]
    facets: Facets
    total: int
    page: int
    fallback: bool
    page_size: int = PAGE_SIZE


# Prices are DECIMAL(10,2) and ratings 0..5: anything above this cannot match and is a bad request.
MAX_FILTER_AMOUNT = 1e9


def _amount(field: str, value: float | None, rounding: str, quantum: Decimal) -> Decimal | None:
    if value is None:
        return None
    if not math.isfinite(value):
        raise InvalidArgument(field, "must be a finite number")
    if value < 0:
        raise InvalidArgument(field, "must be >= 0")
    if value > MAX_FILTER_AMOUNT:  # quantize would overflow the decimal context (a 500 before)
        raise InvalidArgument(field, f"must be at most {MAX_FILTER_AMOUNT:g}")
    # Filters are rounded to the data's own precision (cents, tenths) so both engines compare
    # exactly the same values: min rounds up, max rounds down.
    return Decimal(repr(value)).quantize(quantum, rounding=rounding)


def validate_search(
    *,
    q: str,
    category_path: str,
    min_price: float | None,
    max_price: float | None,
    brands: Sequence[str],
    min_rating: float | None,
    in_stock: bool,
    page: int,
    max_pages: int,
) -> SearchQuery:
    """Check and normalise a search request; raises InvalidArgument naming the field.

    Text is only ever passed to the engines as a value (a match query, a plainto_tsquery parameter),
    never spliced into a query language, so operators and quotes in it are plain words. Control
    characters are refused (PostgreSQL cannot store NUL; nobody types them).
    """
    if _CONTROL.search(q):
        raise InvalidArgument("q", "must not contain control characters")
    text = _SPACES.sub(" ", q).strip()
    if len(text) > MAX_QUERY_LENGTH:
        raise InvalidArgument("q", f"at most {MAX_QUERY_LENGTH} characters")
    if _CONTROL.search(category_path) or len(category_path) > MAX_CATEGORY_PATH:
        raise InvalidArgument("category_path", "malformed category path")
    low = _amount("min_price", min_price, ROUND_CEILING, Decimal("0.01"))
    high = _amount("max_price", max_price, ROUND_FLOOR, Decimal("0.01"))
    if low is not None and high is not None and high < low:
        raise InvalidArgument("max_price", "must be >= min_price")
    rating = _amount("min_rating", min_rating, ROUND_CEILING, Decimal("0.1"))
    if rating is not None and rating > 5:
        raise InvalidArgument("min_rating", "must be between 0 and 5")
    if len(brands) > MAX_BRANDS:
        raise InvalidArgument("brands", f"at most {MAX_BRANDS} brands")
    clean_brands: dict[str, None] = {}
    for brand in brands:
        if _CONTROL.search(brand) or len(brand) > MAX_BRAND_LENGTH or not brand.strip():
            raise InvalidArgument("brands", "each brand must be 1-200 printable characters")
        clean_brands.setdefault(brand.strip(), None)
    if page < 0:
        raise InvalidArgument("page", "must be >= 0")
    if page >= max_pages:
        raise InvalidArgument("page", f"at most {max_pages - 1} (results are capped at {max_pages} pages)")
    return SearchQuery(
        q=text,
        category_path=category_path.strip().strip("/"),
        min_price=low,
        max_price=high,
        brands=tuple(clean_brands),
        min_rating=rating,
        in_stock=in_stock,
        page=page,
    )


def business_factor(*, in_stock: bool, rating: float, review_count: int) -> float:
    """The function_score factor both engines multiply relevance by (documented in search_os)."""
    return (
        1.0
        + (IN_STOCK_WEIGHT if in_stock else 0.0)
        + math.sqrt(RATING_FACTOR * rating)
        + math.log10(1 + REVIEW_FACTOR * review_count)
    )
