-- A checkpoint's body may be written in chunks, each in its own short
-- transaction, between group commits (src/shard/mod.rs, `committer`): one
-- insert of a whole checkpoint of hundreds of megabytes held every bank's
-- commits for over a second. `chunks` > 0 says the body is the
-- concatenation of that many rows of `ledger_checkpoint_chunks` for the
-- checkpoint's (bank, batch), in `seq` order; 0 says it is `body` itself.
ALTER TABLE ledger_checkpoints ADD COLUMN chunks INTEGER NOT NULL DEFAULT 0;

CREATE TABLE ledger_checkpoint_chunks (
    bank  INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    seq   INTEGER NOT NULL,
    body  BLOB    NOT NULL,
    PRIMARY KEY (bank, batch, seq)
);
