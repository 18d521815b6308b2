-- The seeded population (kks-switch seed): who the families are, where they
-- bank and what they are enrolled in, so that `disburse` can compute
-- entitlements. Money and cards live in the ledger (journal), not here.
CREATE TABLE families (
    kk          BIGINT   PRIMARY KEY,  -- Kartu Keluarga number (16 digits)
    nik         TEXT     NOT NULL,     -- NIK of the head of family (16 digits)
    bank        INTEGER  NOT NULL,     -- bank code (2, 8, 9, 200, 451)
    province    SMALLINT NOT NULL,     -- BPS province code (11 Aceh ... 94 Papua)
    pkh         SMALLINT NOT NULL,     -- 1 when enrolled in PKH
    bpnt        SMALLINT NOT NULL,     -- 1 when enrolled in BPNT
    components  TEXT     NOT NULL,     -- PKH members per component, e.g. "sd=2,lansia=1"
    pan         TEXT     NOT NULL      -- the KKS card issued at seeding
);
