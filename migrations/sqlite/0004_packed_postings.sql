-- Postings are now packed into their batch's journal row (src/storage/packed.rs):
-- one blob per batch instead of one row per posting, so SQLite's single
-- writer does one insert per batch. `ledger_postings` keeps the rows written
-- before this migration and is read together with the blobs; nothing is
-- written to it any more.
ALTER TABLE ledger_batches ADD COLUMN postings BLOB;
