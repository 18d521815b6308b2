-- A batch's command blob is written once and read only on replay and audit.
-- Compressing it (pglz, the default for large bytea) cost the backend more
-- CPU than the whole COPY of the batch's postings in a profile of the bulk
-- drill, so it is stored out of line without compression.
ALTER TABLE ledger_batches ALTER COLUMN commands SET STORAGE EXTERNAL;
