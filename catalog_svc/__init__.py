"""catalog_svc: products, categories, faceted search (OpenSearch, PostgreSQL fallback), also-bought."""
