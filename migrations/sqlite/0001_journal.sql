-- Journal: one row per batch (its commands, for replay) and one row per
-- posting (for audit and reports); checkpoints of each bank's ledger.
CREATE TABLE ledger_batches (
    bank     INTEGER NOT NULL,
    batch    INTEGER NOT NULL,
    ts       INTEGER NOT NULL,
    commands BLOB    NOT NULL,
    PRIMARY KEY (bank, batch)
) WITHOUT ROWID;

-- `key` = bank << 40 | posting id: the rowid itself, so appending a
-- posting is an append to the table's B-tree with no separate index.
CREATE TABLE ledger_postings (
    key     INTEGER PRIMARY KEY,
    batch   INTEGER NOT NULL,
    cmd     INTEGER NOT NULL,
    debit   INTEGER NOT NULL,
    credit  INTEGER NOT NULL,
    amount  INTEGER NOT NULL,
    kind    INTEGER NOT NULL
);

CREATE TABLE ledger_checkpoints (
    bank   INTEGER NOT NULL PRIMARY KEY,
    batch  INTEGER NOT NULL,
    ts     INTEGER NOT NULL,
    body   BLOB    NOT NULL
);
