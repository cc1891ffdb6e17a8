"""A realistic, deterministic demo catalog: category tree, brands, titles, descriptions, prices,
ratings, review counts, attributes and stock, all derived from one seed.

`generate(n, seed)` yields products lazily, so 1M products stream without holding them in memory.
The same (n, seed) always gives the same catalog; product i does not depend on n, so a 10K catalog
is the first 10K products of the 1M one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from collections.abc import Iterator
from decimal import Decimal

# root -> (brands, {subcategory -> {leaf -> (nouns, median price)}}, attribute name -> values)
TAXONOMY: dict[str, tuple[list[str], dict[str, dict[str, tuple[list[str], float]]], dict[str, list[str]]]] = {
    "Electronics": (
        ["Voltra", "Nexon", "Quantix", "Lumio", "Arcwave", "Helix", "Sonara", "Pixelon"],
        {
            "Computers": {
                "Laptops": (["Laptop", "Ultrabook", "Notebook", "Chromebook"], 899.0),
                "Monitors": (["Monitor", "Display", "Curved Monitor"], 279.0),
                "Keyboards": (["Keyboard", "Mechanical Keyboard", "Wireless Keyboard"], 69.0),
            },
            "Audio": {
                "Headphones": (["Headphones", "Earbuds", "Noise Cancelling Headphones"], 119.0),
                "Speakers": (["Bluetooth Speaker", "Soundbar", "Smart Speaker"], 89.0),
            },
            "Phones": {
                "Smartphones": (["Smartphone", "Phone"], 549.0),
                "Phone Accessories": (["Phone Case", "Charger", "Screen Protector", "Power Bank"], 19.0),
            },
            "Cameras": {
                "Digital Cameras": (["Mirrorless Camera", "Action Camera", "Compact Camera"], 649.0),
                "Lenses": (["Zoom Lens", "Prime Lens", "Wide Angle Lens"], 399.0),
            },
        },
        {
            "color": ["black", "silver", "white", "blue", "graphite"],
            "warranty": ["1 year", "2 years", "3 years"],
        },
    ),
    "Home & Kitchen": (
        ["Hearthly", "Cookwell", "Nordhaus", "Casa Verde", "Brightline", "Oakmere"],
        {
            "Kitchen": {
                "Cookware": (["Frying Pan", "Saucepan", "Dutch Oven", "Wok", "Stock Pot"], 45.0),
                "Small Appliances": (["Blender", "Coffee Maker", "Toaster", "Air Fryer", "Kettle"], 79.0),
                "Cutlery": (["Chef Knife", "Knife Set", "Paring Knife", "Bread Knife"], 39.0),
            },
            "Furniture": {
                "Chairs": (["Office Chair", "Dining Chair", "Armchair"], 159.0),
                "Desks": (["Standing Desk", "Writing Desk", "Computer Desk"], 249.0),
            },
            "Bedding": {
                "Sheets": (["Sheet Set", "Fitted Sheet", "Duvet Cover"], 49.0),
                "Pillows": (["Pillow", "Memory Foam Pillow", "Body Pillow"], 29.0),
            },
        },
        {
            "color": ["white", "grey", "black", "beige", "navy", "red"],
            "material": ["steel", "wood", "cotton", "ceramic", "aluminium"],
        },
    ),
    "Sports & Outdoors": (
        ["Trailpeak", "Ironstride", "Aerofit", "Summit Gear", "Riverbend", "Kinetic"],
        {
            "Fitness": {
                "Yoga": (["Yoga Mat", "Yoga Block", "Yoga Strap"], 25.0),
                "Weights": (["Dumbbell Set", "Kettlebell", "Barbell", "Weight Plate"], 69.0),
            },
            "Camping": {
                "Tents": (["Tent", "Backpacking Tent", "Family Tent"], 179.0),
                "Sleeping Bags": (["Sleeping Bag", "Sleeping Pad"], 89.0),
                "Backpacks": (["Hiking Backpack", "Daypack", "Travel Backpack"], 79.0),
            },
            "Cycling": {
                "Bikes": (["Road Bike", "Mountain Bike", "Hybrid Bike"], 699.0),
                "Helmets": (["Bike Helmet", "MTB Helmet"], 59.0),
            },
        },
        {"color": ["black", "green", "orange", "blue", "red"], "size": ["S", "M", "L", "XL"]},
    ),
    "Clothing": (
        ["Northloom", "Urbanthread", "Cotton & Co", "Velora", "Stitchwell", "Driftwear"],
        {
            "Men": {
                "Men's Shirts": (["Oxford Shirt", "T-Shirt", "Polo Shirt", "Flannel Shirt"], 29.0),
                "Men's Jackets": (["Rain Jacket", "Down Jacket", "Denim Jacket"], 99.0),
                "Men's Shoes": (["Running Shoes", "Sneakers", "Hiking Boots", "Loafers"], 79.0),
            },
            "Women": {
                "Women's Dresses": (["Summer Dress", "Wrap Dress", "Maxi Dress"], 49.0),
                "Women's Jackets": (["Rain Jacket", "Puffer Jacket", "Blazer"], 99.0),
                "Women's Shoes": (["Running Shoes", "Sneakers", "Ankle Boots", "Sandals"], 75.0),
            },
        },
        {"color": ["black", "white", "navy", "olive", "red", "grey"], "size": ["XS", "S", "M", "L", "XL"]},
    ),
    "Books": (
        ["Penwright Press", "Harbor House", "Lantern Books", "Meridian", "Foxglove Publishing"],
        {
            "Fiction": {
                "Mystery": (["Mystery Novel", "Detective Novel", "Thriller"], 14.0),
                "Science Fiction": (["Science Fiction Novel", "Space Opera", "Dystopian Novel"], 15.0),
            },
            "Non-Fiction": {
                "History": (["History Book", "Biography"], 19.0),
                "Cooking": (["Cookbook", "Baking Book"], 24.0),
            },
        },
        {"format": ["hardcover", "paperback", "ebook"], "language": ["English", "Spanish", "French"]},
    ),
    "Toys & Games": (
        ["Playmaker", "Brickworks", "Tinytown", "Gamecraft", "Wonderbox"],
        {
            "Games": {
                "Board Games": (["Board Game", "Strategy Game", "Party Game"], 34.0),
                "Puzzles": (["Jigsaw Puzzle", "3D Puzzle", "Brain Teaser"], 18.0),
            },
            "Building": {"Building Sets": (["Building Set", "Construction Kit", "Robot Kit"], 49.0)},
        },
        {"age": ["3+", "6+", "8+", "12+"], "pieces": ["100", "500", "1000", "2000"]},
    ),
}

ADJECTIVES = [
    "Pro", "Classic", "Essential", "Ultra", "Compact", "Premium", "Everyday", "Lite", "Max", "Eco",
    "Signature", "Advanced", "Smart", "Deluxe", "Sport", "Travel",
]  # fmt: skip
QUALITIES = [
    "built to last",
    "easy to clean",
    "perfect as a gift",
    "energy efficient",
    "a customer favourite",
    "designed for everyday use",
    "made from durable materials",
]
DETAILS = [
    "a lightweight design",
    "a satisfaction guarantee",
    "an award-winning build",
    "a sleek finish",
    "a compact footprint",
    "a two-year support plan",
]
SELLERS = [
    "Shopmesh Retail",
    "Northwind Traders",
    "Blue Harbor Goods",
    "Summit Supply Co",
    "Maple Street Market",
]


@dataclasses.dataclass(frozen=True)
class DemoCategory:
    names: tuple[str, ...]  # root first

    @property
    def slugs(self) -> tuple[str, ...]:
        from catalog_svc.model import slugify

        return tuple(slugify(n) for n in self.names)

    @property
    def path(self) -> str:
        return "/".join(self.slugs)


@dataclasses.dataclass(frozen=True)
class DemoProduct:
    index: int
    title: str
    description: str
    brand: str
    seller: str
    category: DemoCategory
    price: Decimal
    rating: Decimal
    review_count: int
    attributes: tuple[tuple[str, str], ...]
    # stock to receive per warehouse (EAST=1, WEST=2); all zero means out of stock
    stock: tuple[int, int]

    @property
    def in_stock(self) -> bool:
        return sum(self.stock) > 0


def categories() -> list[DemoCategory]:
    """Every category of the tree, parents before children."""
    out = []
    for root, (_brands, subs, _attrs) in TAXONOMY.items():
        out.append(DemoCategory((root,)))
        for sub, leaves in subs.items():
            out.append(DemoCategory((root, sub)))
            out.extend(DemoCategory((root, sub, leaf)) for leaf in leaves)
    return out


@functools.cache
def _leaves() -> list[tuple[str, str, str]]:
    return [
        (root, sub, leaf)
        for root, (_b, subs, _a) in TAXONOMY.items()
        for sub, leaves in subs.items()
        for leaf in leaves
    ]


def _price(rng: random.Random, median: float) -> Decimal:
    value = max(1.0, math.exp(rng.gauss(math.log(median), 0.55)))
    whole = int(value)
    cents = rng.choice((99, 99, 99, 49, 95, 0))
    return Decimal(f"{whole}.{cents:02d}") if whole > 0 else Decimal("0.99")


def _rating(rng: random.Random) -> tuple[Decimal, int]:
    if rng.random() < 0.08:
        return Decimal("0.0"), 0
    reviews = max(1, int(math.exp(rng.gauss(3.2, 1.6))))
    rating = min(5.0, max(1.0, rng.gauss(4.1, 0.55)))
    return Decimal(f"{rating:.1f}"), reviews


def product(index: int, seed: int = 42) -> DemoProduct:
    """The index-th product of the catalog of `seed` (independent of the catalog's size)."""
    rng = random.Random(f"{seed}:{index}")
    leaves = _leaves()
    root, sub, leaf = leaves[rng.randrange(len(leaves))]
    brands, subs, attribute_values = TAXONOMY[root]
    nouns, median = subs[sub][leaf]
    brand = rng.choice(brands)
    noun = rng.choice(nouns)
    adjective = rng.choice(ADJECTIVES)
    model = f"{rng.choice('ABCDEFGHKMRSTVXZ')}{rng.randint(10, 999)}"
    attributes = tuple((name, rng.choice(values)) for name, values in attribute_values.items())
    color = dict(attributes).get("color")
    title = f"{brand} {adjective} {noun} {model}" + (
        f", {color.title()}" if color and rng.random() < 0.5 else ""
    )
    quality, also = rng.sample(QUALITIES, 2)
    description = (
        f"The {brand} {adjective} {noun} {model} is {quality}, with {rng.choice(DETAILS)}. "
        + " ".join(f"{name.title()}: {value}." for name, value in attributes)
        + f" A great choice in {leaf.lower()}: {also}."
    )
    rating, reviews = _rating(rng)
    out_of_stock = rng.random() < 0.12
    stock = (0, 0) if out_of_stock else (rng.randint(0, 60), rng.randint(1, 60))
    return DemoProduct(
        index=index,
        title=title,
        description=description,
        brand=brand,
        seller=SELLERS[index % len(SELLERS)],
        category=DemoCategory((root, sub, leaf)),
        price=_price(rng, median),
        rating=rating,
        review_count=reviews,
        attributes=attributes,
        stock=stock,
    )


def generate(n: int, seed: int = 42, *, start: int = 0) -> Iterator[DemoProduct]:
    for index in range(start, start + n):
        yield product(index, seed)
