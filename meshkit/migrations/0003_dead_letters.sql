-- Events a consumer could not apply: parked here (with their processed_events row, in one
-- transaction) so one unreadable or always-failing record does not stop its partition, and the
-- consumer, forever. Nothing is lost: the record's bytes and headers are kept for a fix and replay.
CREATE TABLE IF NOT EXISTS dead_letters (
    id               BIGSERIAL   PRIMARY KEY,
    consumer         TEXT        NOT NULL,
    event_id         UUID        NOT NULL,
    topic            TEXT        NOT NULL,
    kafka_partition  INT         NOT NULL,
    kafka_offset     BIGINT      NOT NULL,
    record_key       BYTEA,
    payload          BYTEA,
    headers          JSONB       NOT NULL,
    error            TEXT        NOT NULL,
    attempts         INT         NOT NULL,
    dead_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (consumer, event_id)
);
