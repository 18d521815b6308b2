-- Who may transact, and with which keys. Keys are stored only wrapped under
-- the master key (INTERFACE §6), which is never in the database.
CREATE TABLE bank_keys (
    bank  INTEGER PRIMARY KEY,
    pvk   BLOB NOT NULL
);

CREATE TABLE terminals (
    terminal_id  TEXT NOT NULL,
    merchant_id  TEXT NOT NULL,
    kind         TEXT NOT NULL,
    bank         INTEGER NOT NULL,
    mcc          TEXT NOT NULL,
    pin_key      BLOB NOT NULL,
    mac_key      BLOB,
    PRIMARY KEY (terminal_id, merchant_id)
);
