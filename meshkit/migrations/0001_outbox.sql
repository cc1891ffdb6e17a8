-- Shared tables every service schema gets (applied into each schema by meshkit.migrate).

-- Transactional outbox: events are inserted in the same transaction as the change they describe;
-- the relay publishes unsent rows to Kafka in id order and marks them sent.
CREATE TABLE IF NOT EXISTS outbox (
    id            BIGSERIAL PRIMARY KEY,
    event_id      UUID        NOT NULL UNIQUE,
    topic         TEXT        NOT NULL,
    key           TEXT        NOT NULL,
    event_type    TEXT        NOT NULL,
    -- either serialized protobuf, or proto3 JSON of `message_type` (written by SQL functions on hot
    -- paths, so the whole transaction is one statement); the relay serializes JSON to protobuf.
    payload       BYTEA,
    payload_json  JSONB,
    message_type  TEXT,
    headers       JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at       TIMESTAMPTZ,
    CHECK (payload IS NOT NULL OR (payload_json IS NOT NULL AND message_type IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- De-duplication for consumers: an event id is recorded in the same transaction as its effect.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer      TEXT        NOT NULL,
    event_id      UUID        NOT NULL,
    processed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
