-- Catalog schema: sellers, the category tree, products (the seed's columns + brand, attributes and a
-- full-text vector for the PostgreSQL search fallback), catalog's own knowledge of stock (from
-- inventory events), index sync bookkeeping, co-purchases (from order events), recommendations and
-- the search log.

CREATE TABLE sellers (
    id          BIGSERIAL PRIMARY KEY,
    name        VARCHAR(200) NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Materialized path: `path` is the slugs from the root joined by '/', `ancestor_paths` every prefix
-- of it (root first, itself last). Search counts a product under each ancestor path.
CREATE TABLE categories (
    id              BIGSERIAL PRIMARY KEY,
    parent_id       BIGINT REFERENCES categories (id) ON DELETE RESTRICT,
    name            VARCHAR(200) NOT NULL,
    slug            VARCHAR(100) NOT NULL CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    path            TEXT NOT NULL UNIQUE,
    depth           INT  NOT NULL CHECK (depth >= 0),
    ancestor_paths  TEXT[] NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (parent_id, slug)
);
CREATE INDEX categories_path_prefix ON categories (path text_pattern_ops);

CREATE TABLE products (
    id            BIGSERIAL PRIMARY KEY,
    seller_id     BIGINT NOT NULL REFERENCES sellers (id) ON DELETE CASCADE,
    title         VARCHAR(500) NOT NULL,
    slug          VARCHAR(500) NOT NULL UNIQUE,
    description   TEXT NOT NULL DEFAULT '',
    category_id   BIGINT REFERENCES categories (id) ON DELETE SET NULL,
    price         NUMERIC(10, 2) NOT NULL CHECK (price >= 0),
    rating        NUMERIC(2, 1) NOT NULL DEFAULT 0 CHECK (rating >= 0 AND rating <= 5),
    review_count  INT NOT NULL DEFAULT 0 CHECK (review_count >= 0),
    is_active     BOOLEAN NOT NULL DEFAULT true,
    brand         VARCHAR(200) NOT NULL DEFAULT '',
    -- [{"name": "color", "value": "black"}, ...]
    attributes    JSONB NOT NULL DEFAULT '[]'::jsonb,
    -- grows by one with every change; carried by catalog events as the per-product version
    version       BIGINT NOT NULL DEFAULT 1,
    request_id    UUID UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- the fallback's to_tsvector(title || description), title weighted above description
    search        TSVECTOR GENERATED ALWAYS AS (
                      setweight(to_tsvector('english', title), 'A')
                      || setweight(to_tsvector('english', description), 'B')) STORED
);
CREATE INDEX idx_products_category ON products (category_id, created_at DESC, id DESC);
CREATE INDEX idx_products_newest ON products (created_at DESC, id DESC);
CREATE INDEX idx_products_price ON products (price);
CREATE INDEX idx_products_rating ON products (rating);
CREATE INDEX idx_products_updated ON products (updated_at);
CREATE INDEX idx_products_search ON products USING GIN (search);

-- What catalog knows about stock, from inventory StockLevelChanged events (never from inventory's
-- schema). `version` is inventory's per-product event version: older events are ignored.
CREATE TABLE stock_status (
    product_id  BIGINT PRIMARY KEY,
    in_stock    BOOLEAN NOT NULL,
    available   INT NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX stock_status_updated ON stock_status (updated_at);

-- Highest catalog event version the indexer has applied per product (stale events are skipped).
CREATE TABLE index_versions (
    product_id       BIGINT PRIMARY KEY,
    catalog_version  BIGINT NOT NULL
);

-- Products whose search document must be rewritten from PostgreSQL; `seq` lets the sync loop delete
-- only the marks it has handled (a newer mark survives).
CREATE SEQUENCE index_dirty_seq;
CREATE TABLE index_dirty (
    product_id  BIGINT PRIMARY KEY,
    seq         BIGINT NOT NULL DEFAULT nextval('index_dirty_seq'),
    marked_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per (order, product) from order_created events; the also-bought job's only input.
CREATE TABLE co_purchases (
    order_id    TEXT   NOT NULL,
    product_id  BIGINT NOT NULL,
    quantity    INT    NOT NULL CHECK (quantity > 0),
    ordered_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX co_purchases_product ON co_purchases (product_id, ordered_at);

CREATE TABLE product_recommendations (
    product_id              BIGINT NOT NULL,
    recommended_product_id  BIGINT NOT NULL,
    type                    VARCHAR(30) NOT NULL CHECK (type IN ('also_bought')),
    score                   DOUBLE PRECISION NOT NULL,
    frequency               INT NOT NULL,
    computed_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (product_id, type, recommended_product_id)
);
CREATE INDEX product_recommendations_rank ON product_recommendations (product_id, type, score DESC);

-- Analytics only; rows older than 90 days are deleted by the retention job.
CREATE TABLE search_log (
    id            BIGSERIAL PRIMARY KEY,
    query         TEXT NOT NULL,
    filters       JSONB NOT NULL,
    result_count  BIGINT NOT NULL,
    engine        VARCHAR(20) NOT NULL,
    took_ms       DOUBLE PRECISION NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX search_log_created ON search_log (created_at);
