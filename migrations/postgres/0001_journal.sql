-- Journal: one row per batch (its commands, for replay) and one row per
-- posting (for audit and reports); checkpoints of each bank's ledger.
CREATE TABLE ledger_batches (
    bank     INTEGER NOT NULL,
    batch    BIGINT  NOT NULL,
    ts       BIGINT  NOT NULL,
    commands BYTEA   NOT NULL,
    PRIMARY KEY (bank, batch)
);

CREATE TABLE ledger_postings (
    bank    INTEGER  NOT NULL,
    id      BIGINT   NOT NULL,
    batch   BIGINT   NOT NULL,
    cmd     INTEGER  NOT NULL,
    debit   BIGINT   NOT NULL,
    credit  BIGINT   NOT NULL,
    amount  BIGINT   NOT NULL,
    kind    SMALLINT NOT NULL,
    PRIMARY KEY (bank, id)
);

CREATE TABLE ledger_checkpoints (
    bank   INTEGER NOT NULL PRIMARY KEY,
    batch  BIGINT  NOT NULL,
    ts     BIGINT  NOT NULL,
    body   BYTEA   NOT NULL
);
