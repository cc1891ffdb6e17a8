"""Shared runtime for every Shopmesh service: settings, server bootstrap, DB, outbox, Kafka, errors."""
