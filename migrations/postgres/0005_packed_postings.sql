-- Postings are now packed into their batch's journal row, as on SQLite
-- (src/storage/packed.rs): one row per batch instead of one row and one
-- primary-key index entry per posting. In a profile of the bulk drill the
-- backend spent most of its time in the COPY of posting rows and their
-- B-tree inserts. `ledger_postings` keeps the rows written before this
-- migration and is read together with the blobs; nothing is written to it
-- any more.
ALTER TABLE ledger_batches ADD COLUMN postings BYTEA;
ALTER TABLE ledger_batches ALTER COLUMN postings SET STORAGE EXTERNAL;
