-- Audit trail (applied into every service schema). One hash chain per resource, so audited writes
-- on different resources never wait on a shared row; each chain's head (last seq and hash) is kept
-- in audit_chain_heads, outside the audited table, so deleting the newest record is detected too.
CREATE TABLE IF NOT EXISTS audit_log (
    id           BIGSERIAL PRIMARY KEY,
    occurred_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    service      TEXT        NOT NULL,
    actor        TEXT        NOT NULL,
    actor_roles  TEXT[]      NOT NULL DEFAULT '{}',
    action       TEXT        NOT NULL,
    resource     TEXT        NOT NULL,
    request_id   TEXT        NOT NULL DEFAULT '',
    trace_id     TEXT        NOT NULL DEFAULT '',
    changes      JSONB       NOT NULL DEFAULT '{}'::jsonb,
    chain_seq    BIGINT      NOT NULL,
    prev_hash    TEXT        NOT NULL,
    hash         TEXT        NOT NULL,
    UNIQUE (resource, chain_seq)
);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor, occurred_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS audit_log_resource ON audit_log (resource, occurred_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log (occurred_at, id);

-- Records older than the hot period (1 year) move here; purged after 3 years in total.
CREATE TABLE IF NOT EXISTS audit_log_archive (LIKE audit_log INCLUDING DEFAULTS);
CREATE UNIQUE INDEX IF NOT EXISTS audit_log_archive_chain ON audit_log_archive (resource, chain_seq);
CREATE INDEX IF NOT EXISTS audit_log_archive_time ON audit_log_archive (occurred_at, id);

CREATE TABLE IF NOT EXISTS audit_chain_heads (
    resource     TEXT PRIMARY KEY,
    seq          BIGINT NOT NULL,
    hash         TEXT   NOT NULL,
    -- after a purge the chain starts above this seq, linked from this hash
    base_seq     BIGINT NOT NULL DEFAULT 0,
    base_hash    TEXT   NOT NULL DEFAULT '',
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
