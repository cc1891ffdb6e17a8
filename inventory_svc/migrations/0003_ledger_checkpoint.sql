-- The invariant checker's running totals of the stock ledger, so each check sums only the ledger
-- rows written since the last checkpoint instead of the whole table inside one long snapshot.
--
-- ledger_checkpoint holds, per stock row, sum(quantity_delta) and sum(reserved_delta) over every
-- ledger row with id <= ledger_checkpoint_horizon.through_id. Ledger ids come from a sequence and
-- can commit out of order, so the horizon only moves to a candidate (the sequence's last value,
-- recorded with the time and the snapshot's xmax) once no transaction that could still write an id
-- at or below it is open: see inventory_svc/jobs.py.
CREATE TABLE ledger_checkpoint (
    product_id   BIGINT NOT NULL,
    warehouse_id BIGINT NOT NULL,
    quantity_sum BIGINT NOT NULL,
    reserved_sum BIGINT NOT NULL,
    PRIMARY KEY (product_id, warehouse_id)
);

CREATE TABLE ledger_checkpoint_horizon (
    only_row       BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    through_id     BIGINT  NOT NULL DEFAULT 0,
    candidate_id   BIGINT,
    candidate_xmax XID8,
    candidate_at   TIMESTAMPTZ,
    advanced_at    TIMESTAMPTZ
);
INSERT INTO ledger_checkpoint_horizon DEFAULT VALUES;
