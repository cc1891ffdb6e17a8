-- Shared tables every service schema gets (applied into each schema by meshkit.migrate).

-- Transactional outbox: events are inserted in the same transaction as the change they describe;
-- the relay publishes unsent rows to Kafka in id order and marks them sent.
CREATE TABLE IF NOT EXISTS outbox (
    id            BIGSERIAL PRIMARY KEY,
    event_id      UUID        NOT NULL UNIQUE,
    topic         TEXT        NOT NULL,
    key           TEXT        NOT NULL,
    event_type    TEXT        NOT NULL,
    payload       BYTEA       NOT NULL,
    headers       JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at       TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- De-duplication for consumers: an event id is recorded in the same transaction as its effect.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer      TEXT        NOT NULL,
    event_id      UUID        NOT NULL,
    processed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
