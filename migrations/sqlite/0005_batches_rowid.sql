-- The journal's batch rows move from a WITHOUT ROWID table keyed by
-- (bank, batch) to a rowid table keyed by `key` = bank << 40 | batch.
--
-- Why: a WITHOUT ROWID table stores whole rows in an index B-tree, and
-- SQLite compares index cells by reading their entire payload. A batch row
-- carries kilobytes of commands and postings that spill into overflow
-- pages, so every append read several earlier rows' overflow chains from
-- disk just to find its place. With an integer primary key the comparison
-- is on the rowid alone and an append touches only the B-tree's right edge.
-- Rows keep their bank and batch columns for readers.
CREATE TABLE ledger_batches_by_key (
    key      INTEGER PRIMARY KEY,
    bank     INTEGER NOT NULL,
    batch    INTEGER NOT NULL,
    ts       INTEGER NOT NULL,
    commands BLOB    NOT NULL,
    postings BLOB
);

INSERT INTO ledger_batches_by_key (key, bank, batch, ts, commands, postings)
SELECT (bank << 40) | batch, bank, batch, ts, commands, postings
FROM ledger_batches
ORDER BY bank, batch;

DROP TABLE ledger_batches;

ALTER TABLE ledger_batches_by_key RENAME TO ledger_batches;
