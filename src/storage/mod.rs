//! Storage through sqlx: the embedded SQLite file by default (WAL,
//! `synchronous=FULL`) and PostgreSQL for scale (`synchronous_commit=on`).
//! SQL lives here and nowhere else; migrations are embedded per backend.
//!
//! What is stored (see `migrations/`):
//! - `ledger_batches`: per bank, every applied batch's commands (postcard
//!   bytes), timestamp and postings (packed, `packed.rs`), so `audit` can
//!   re-derive balances. Replaying the commands in order rebuilds the
//!   ledger. On SQLite rows are keyed by `bank << 40 | batch`, so an append
//!   is an append to the table's B-tree (migration `sqlite/0005`).
//! - `ledger_postings`: one row per posting, as written before postings were
//!   packed (SQLite migration 0004, PostgreSQL 0005); read together with the
//!   blobs, never written any more.
//! - `ledger_checkpoints`: per bank, the latest ledger snapshot and the
//!   batch it includes; start-up loads it and replays the batches after it.
//!
//! A group of batches (several banks' batches included) is made durable in
//! one transaction: that is the group commit the shards wait on.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;
use std::str::FromStr;
use std::time::Duration;

pub mod packed;
mod population;
pub use population::FamilyRow;

/// SQLite keys postings by `bank << 40 | id` (the rowid): 2^40 postings per
/// bank is far beyond any run.
const SQLITE_BANK_SHIFT: u32 = 40;

/// How long a write waits for a lock another connection holds before it
/// fails (SQLite `busy_timeout`, PostgreSQL `lock_timeout`). A group commit
/// that fails is answered 91 (INTERFACE §5), so this bounds how long a
/// terminal waits while the database is locked: well within its 30 s.
pub const LOCK_WAIT: Duration = Duration::from_secs(2);

/// How long taking a connection from the pool may take, connecting
/// included: bounds the wait for 91 while the database is unreachable.
pub const ACQUIRE_WAIT: Duration = Duration::from_secs(3);

/// The packed postings of every batch with sequence number ≥ `from_batch`
/// (of one bank, or all), as (bank, batch, postings) in bank and batch
/// order. A blob that does not decode is an error naming its batch.
async fn packed_postings(
    store: &Store,
    bank: Option<u16>,
    from_batch: u64,
) -> Result<Vec<(u16, u64, Vec<PostingRow>)>, StoreError> {
    let rows: Vec<(u16, u64, Vec<u8>)> = match store {
        Store::Sqlite(pool) => {
            // Rows are keyed by bank << 40 | batch: one bank is a key range.
            let (lo, hi) = match bank {
                Some(b) => (sqlite_key(b, 0), sqlite_key(b + 1, 0)),
                None => (0, i64::MAX),
            };
            sqlx::query(
                "SELECT bank, batch, postings FROM ledger_batches \
                 WHERE postings IS NOT NULL AND key >= ?1 AND key < ?2 AND batch >= ?3 \
                 ORDER BY key",
            )
            .bind(lo)
            .bind(hi)
            .bind(from_batch as i64)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| {
                (
                    r.get::<i64, _>(0) as u16,
                    r.get::<i64, _>(1) as u64,
                    r.get(2),
                )
            })
            .collect()
        }
        Store::Postgres(pool) => {
            // A bank range, as on SQLite: a plain predicate the primary key
            // (bank, batch) serves, for one bank or all.
            let (lo, hi) = bank.map_or((0, i32::MAX), |b| (i32::from(b), i32::from(b)));
            sqlx::query(
                "SELECT bank, batch, postings FROM ledger_batches \
                 WHERE postings IS NOT NULL AND bank BETWEEN $1 AND $2 AND batch >= $3 \
                 ORDER BY bank, batch",
            )
            .bind(lo)
            .bind(hi)
            .bind(from_batch as i64)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| {
                (
                    r.get::<i32, _>(0) as u16,
                    r.get::<i64, _>(1) as u64,
                    r.get(2),
                )
            })
            .collect()
        }
    };
    rows.into_iter()
        .map(|(bank, batch, blob)| {
            packed::decode(&blob)
                .map(|postings| (bank, batch, postings))
                .map_err(|why| StoreError::Corrupt { bank, batch, why })
        })
        .collect()
}

fn sqlite_key(bank: u16, id: u64) -> i64 {
    (((bank as u64) << SQLITE_BANK_SHIFT) | id) as i64
}

/// One posting as journaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostingRow {
    pub id: u64,
    pub cmd: u32,
    pub debit: u64,
    pub credit: u64,
    pub amount: u64,
    pub kind: i16,
}

/// One bank's applied batch, ready to be made durable.
#[derive(Clone, Debug, Default)]
pub struct JournalBatch {
    /// Bank code (2, 8, 9, 200, 451).
    pub bank: u16,
    /// The ledger's batch sequence number.
    pub batch: u64,
    /// The timestamp the batch was applied with (unix seconds).
    pub ts: u64,
    /// The batch's commands, encoded for replay.
    pub commands: Vec<u8>,
    /// Its postings.
    pub postings: Vec<PostingRow>,
}

/// A registered terminal as stored: keys wrapped under the master key.
#[derive(Clone, PartialEq, Eq)]
pub struct TerminalRow {
    /// DE41 (ans8).
    pub terminal_id: String,
    /// DE42 (ans15).
    pub merchant_id: String,
    /// `ewarong`, `agent` or `merchant`.
    pub kind: String,
    /// The terminal's (acquiring) bank code.
    pub bank: u16,
    /// DE18 merchant type.
    pub mcc: String,
    /// Wrapped 3DES PIN key.
    pub pin_key: Vec<u8>,
    /// Wrapped MAC key, when the terminal MACs.
    pub mac_key: Option<Vec<u8>>,
}

/// Only ids are printed: the wrapped keys stay out of logs too.
impl std::fmt::Debug for TerminalRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalRow")
            .field("terminal_id", &self.terminal_id)
            .field("merchant_id", &self.merchant_id)
            .field("kind", &self.kind)
            .field("bank", &self.bank)
            .field("mac", &self.mac_key.is_some())
            .finish()
    }
}

/// A posting read back for audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredPosting {
    pub batch: u64,
    pub id: u64,
    pub cmd: u32,
    pub debit: u64,
    pub credit: u64,
    pub amount: u64,
    pub kind: i16,
}

/// A stored batch read back for replay.
#[derive(Clone, Debug)]
pub struct StoredBatch {
    pub batch: u64,
    pub ts: u64,
    pub commands: Vec<u8>,
}

/// A stored checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub batch: u64,
    pub ts: u64,
    pub body: Vec<u8>,
}

/// A stored checkpoint's header, as [`Store::read_checkpoint`] passes it
/// with each piece of the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointHead {
    /// The last batch the checkpoint includes.
    pub batch: u64,
    /// Its timestamp (unix seconds).
    pub ts: u64,
    /// The body's length in bytes, all pieces together.
    pub len: u64,
    /// Pieces the body was written in; 0 when it is in the checkpoint row.
    pub chunks: u32,
}

/// Storage failures. Messages carry no row contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL must start with sqlite:// or postgres://")]
    BadUrl,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("journal: bank {bank} batch {batch}: {why}")]
    Corrupt { bank: u16, batch: u64, why: String },
}

/// How often a SQLite store copies its WAL back into the database file.
const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(25);

/// Copies a SQLite store's write-ahead log back into the database file on a
/// connection of its own, every [`WAL_CHECKPOINT_EVERY`], until the pool is
/// closed.
///
/// Why: SQLite otherwise checkpoints inside the COMMIT that crosses
/// `wal_autocheckpoint` pages, so every so often one group commit waited
/// for 64 MiB to be copied and the database file synced, and every request
/// queued behind it waited too. A PASSIVE checkpoint here
/// runs beside the writer. It cannot reset the log while commits keep
/// coming, so the commit that crosses `wal_autocheckpoint` still checkpoints,
/// but only the few milliseconds of frames written since this task's last
/// pass; the log then restarts from its beginning.
async fn wal_checkpointer(pool: SqlitePool) {
    let mut tick = tokio::time::interval(WAL_CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            break;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                break;
            }
            tracing::debug!(error = %e, "WAL checkpoint deferred");
        }
    }
}

/// A connected, migrated store.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Store {
    /// Connect and run the embedded migrations. SQLite files are created
    /// when missing.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(LOCK_WAIT)
                // 16 MiB of page cache per connection (four connections):
                // appends touch the right edge of one table, and a wave's
                // process must hold every family's card besides.
                .pragma("cache_size", "-16384")
                // The WAL is copied back by `wal_checkpointer`; a commit
                // finishes that copy itself only when the log passes 64 MiB
                // (SQLite's default is 4 MiB), which under constant load is
                // when the log can restart.
                .pragma("wal_autocheckpoint", "16384");
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                // No ping before each use: a file connection does not go
                // stale, and the ping was one more round trip to the
                // connection's thread in every group commit.
                .test_before_acquire(false)
                .acquire_timeout(ACQUIRE_WAIT)
                .connect_with(opts)
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
            tokio::spawn(wal_checkpointer(pool.clone()));
            Ok(Store::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let lock_ms = LOCK_WAIT.as_millis().to_string();
            let opts = PgConnectOptions::from_str(url)?.options([
                ("synchronous_commit", "on"),
                ("lock_timeout", lock_ms.as_str()),
            ]);
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(ACQUIRE_WAIT)
                .connect_with(opts)
                .await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Ok(Store::Postgres(pool))
        } else {
            Err(StoreError::BadUrl)
        }
    }

    /// Make a group of batches durable in one transaction.
    ///
    /// Boxed so that callers can spawn it: sqlx's executor bounds are
    /// higher-ranked and do not survive into an `impl Future` otherwise.
    pub fn append<'a>(
        &'a self,
        group: &'a [JournalBatch],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'a>>
    {
        Box::pin(self.append_inner(group))
    }

    // Index loops, not iterators, across the awaits below: sqlx's executor
    // bounds are higher-ranked and a slice iterator held across an await
    // makes the future fail them.
    #[allow(clippy::needless_range_loop)]
    async fn append_inner(&self, group: &[JournalBatch]) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                // All batch rows in one statement: commands and postings
                // (packed, see `packed.rs`) are two bound blobs per batch.
                let packed: Vec<Vec<u8>> =
                    group.iter().map(|b| packed::encode(&b.postings)).collect();
                let mut sql = String::with_capacity(96 + 12 * group.len());
                sql.push_str(
                    "INSERT INTO ledger_batches (key, bank, batch, ts, commands, postings) VALUES ",
                );
                for bi in 0..group.len() {
                    sql.push_str(if bi == 0 {
                        "(?,?,?,?,?,?)"
                    } else {
                        ",(?,?,?,?,?,?)"
                    });
                }
                let mut q = sqlx::query(&sql);
                for bi in 0..group.len() {
                    let b = &group[bi];
                    if b.batch >= 1 << SQLITE_BANK_SHIFT {
                        return Err(StoreError::Corrupt {
                            bank: b.bank,
                            batch: b.batch,
                            why: "batch number beyond the journal key's range".into(),
                        });
                    }
                    q = q
                        .bind(sqlite_key(b.bank, b.batch))
                        .bind(b.bank as i64)
                        .bind(b.batch as i64)
                        .bind(b.ts as i64)
                        .bind(&b.commands[..])
                        .bind(&packed[bi][..]);
                }
                // One statement, so SQLite's autocommit makes it one
                // transaction: no BEGIN and COMMIT round trips to the
                // connection's worker thread, each of which cost a thread
                // wake-up in the commit path.
                if !group.is_empty() {
                    q.persistent(false).execute(pool).await?;
                }
                Ok(())
            }
            Store::Postgres(pool) => {
                // Every batch row of the group, postings packed, in one
                // statement (so one implicit transaction).
                let packed: Vec<Vec<u8>> =
                    group.iter().map(|b| packed::encode(&b.postings)).collect();
                let (mut banks, mut batches, mut stamps, mut blobs) = (
                    Vec::with_capacity(group.len()),
                    Vec::with_capacity(group.len()),
                    Vec::with_capacity(group.len()),
                    Vec::with_capacity(group.len()),
                );
                for b in group {
                    banks.push(b.bank as i32);
                    batches.push(b.batch as i64);
                    stamps.push(b.ts as i64);
                    blobs.push(&b.commands[..]);
                }
                let postings: Vec<&[u8]> = packed.iter().map(|p| &p[..]).collect();
                if !group.is_empty() {
                    sqlx::query(
                        "INSERT INTO ledger_batches (bank, batch, ts, commands, postings) \
                         SELECT * FROM UNNEST($1::int4[], $2::int8[], $3::int8[], $4::bytea[], $5::bytea[])",
                    )
                    .bind(banks)
                    .bind(batches)
                    .bind(stamps)
                    .bind(blobs)
                    .bind(postings)
                    .execute(pool)
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// Replace a bank's checkpoint, its body in one row.
    pub async fn save_checkpoint(&self, bank: u16, cp: &Checkpoint) -> Result<(), StoreError> {
        self.put_checkpoint_header(bank, cp.batch, cp.ts, &cp.body, 0)
            .await
    }

    /// Write piece `seq` of the body of the checkpoint a later
    /// [`Store::commit_chunked_checkpoint`] for `(bank, batch)` will name.
    /// Each piece is its own short transaction, so the group commits of
    /// every bank can go on between pieces of a large checkpoint.
    pub async fn save_checkpoint_chunk(
        &self,
        bank: u16,
        batch: u64,
        seq: u32,
        body: &[u8],
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO ledger_checkpoint_chunks (bank, batch, seq, body) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (bank, batch, seq) DO UPDATE SET body = excluded.body",
                )
                .bind(bank as i64)
                .bind(batch as i64)
                .bind(i64::from(seq))
                .bind(body)
                .execute(pool)
                .await?;
            }
            Store::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO ledger_checkpoint_chunks (bank, batch, seq, body) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (bank, batch, seq) DO UPDATE SET body = excluded.body",
                )
                .bind(bank as i32)
                .bind(batch as i64)
                .bind(seq as i32)
                .bind(body)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Make the checkpoint whose `chunks` pieces were written by
    /// [`Store::save_checkpoint_chunk`] the bank's checkpoint, and drop the
    /// pieces of every other checkpoint of the bank.
    pub async fn commit_chunked_checkpoint(
        &self,
        bank: u16,
        batch: u64,
        ts: u64,
        chunks: u32,
    ) -> Result<(), StoreError> {
        self.put_checkpoint_header(bank, batch, ts, &[], chunks)
            .await
    }

    /// Upsert a bank's checkpoint row and drop chunks no longer named by it,
    /// in one transaction.
    async fn put_checkpoint_header(
        &self,
        bank: u16,
        batch: u64,
        ts: u64,
        body: &[u8],
        chunks: u32,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO ledger_checkpoints (bank, batch, ts, body, chunks) VALUES (?, ?, ?, ?, ?) \
                     ON CONFLICT (bank) DO UPDATE SET batch = excluded.batch, ts = excluded.ts, \
                     body = excluded.body, chunks = excluded.chunks",
                )
                .bind(bank as i64)
                .bind(batch as i64)
                .bind(ts as i64)
                .bind(body)
                .bind(i64::from(chunks))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "DELETE FROM ledger_checkpoint_chunks WHERE bank = ? AND (batch <> ? OR seq >= ?)",
                )
                .bind(bank as i64)
                .bind(batch as i64)
                .bind(i64::from(chunks))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO ledger_checkpoints (bank, batch, ts, body, chunks) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (bank) DO UPDATE SET batch = excluded.batch, ts = excluded.ts, \
                     body = excluded.body, chunks = excluded.chunks",
                )
                .bind(bank as i32)
                .bind(batch as i64)
                .bind(ts as i64)
                .bind(body)
                .bind(chunks as i32)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "DELETE FROM ledger_checkpoint_chunks WHERE bank = $1 AND (batch <> $2 OR seq >= $3)",
                )
                .bind(bank as i32)
                .bind(batch as i64)
                .bind(chunks as i32)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// A bank's latest checkpoint, its body reassembled if it was written in
    /// chunks (for tools and tests: recovery reads it piece by piece with
    /// [`Store::read_checkpoint`]). The body is allocated once, at its exact
    /// size, so loading a checkpoint of N bytes holds about N bytes.
    pub async fn load_checkpoint(&self, bank: u16) -> Result<Option<Checkpoint>, StoreError> {
        let mut body = Vec::new();
        let head = self
            .read_checkpoint(bank, |head: &CheckpointHead, piece: &[u8]| {
                if body.is_empty() {
                    body.reserve_exact(usize::try_from(head.len).unwrap_or(0));
                }
                body.extend_from_slice(piece);
                Ok::<(), StoreError>(())
            })
            .await?;
        Ok(head.map(|h| Checkpoint {
            batch: h.batch,
            ts: h.ts,
            body,
        }))
    }

    /// Reads a bank's latest checkpoint a piece at a time: `piece` is called
    /// with the checkpoint's header and each piece of its body in order
    /// (once with the whole body for a checkpoint written in one row), and
    /// only one piece is held at a time. Returns the header, or `None` when
    /// the bank has no checkpoint (then `piece` is never called); an error
    /// from `piece` stops the read and is returned.
    ///
    /// The checkpoint row and its chunks are read in one transaction
    /// (REPEATABLE READ on PostgreSQL; on SQLite a read transaction sees one
    /// snapshot of the WAL), so a checkpoint committed meanwhile cannot pair
    /// one checkpoint's row with another's chunks, or with none: a missing
    /// chunk is [`StoreError::Corrupt`], found before any piece is passed.
    pub async fn read_checkpoint<E, F>(
        &self,
        bank: u16,
        mut piece: F,
    ) -> Result<Option<CheckpointHead>, E>
    where
        E: From<StoreError>,
        F: FnMut(&CheckpointHead, &[u8]) -> Result<(), E>,
    {
        let corrupt = |batch: u64, chunks: u32, found: i64| StoreError::Corrupt {
            bank,
            batch,
            why: format!("checkpoint names {chunks} chunks, {found} found"),
        };
        let head = |batch: i64, ts: i64, chunks: i64| match u32::try_from(chunks) {
            Ok(chunks) => Ok(CheckpointHead {
                batch: batch as u64,
                ts: ts as u64,
                len: 0,
                chunks,
            }),
            Err(_) => Err(StoreError::Corrupt {
                bank,
                batch: batch as u64,
                why: format!("checkpoint names {chunks} chunks"),
            }),
        };
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await.map_err(StoreError::from)?;
                let row = sqlx::query(
                    "SELECT batch, ts, chunks, body FROM ledger_checkpoints WHERE bank = ?",
                )
                .bind(bank as i64)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from)?;
                let Some(row) = row else {
                    // Ended here rather than dropped: a dropped transaction
                    // holds its connection until a rollback runs later.
                    tx.commit().await.map_err(StoreError::from)?;
                    return Ok(None);
                };
                let mut head = head(
                    row.try_get(0).map_err(StoreError::from)?,
                    row.try_get(1).map_err(StoreError::from)?,
                    row.try_get(2).map_err(StoreError::from)?,
                )?;
                if head.chunks == 0 {
                    let body: &[u8] = row.try_get(3).map_err(StoreError::from)?;
                    head.len = body.len() as u64;
                    piece(&head, body)?;
                } else {
                    drop(row);
                    let (found, size): (i64, i64) = sqlx::query_as(
                        "SELECT COUNT(*), COALESCE(SUM(length(body)), 0) \
                         FROM ledger_checkpoint_chunks WHERE bank = ? AND batch = ? AND seq < ?",
                    )
                    .bind(bank as i64)
                    .bind(head.batch as i64)
                    .bind(i64::from(head.chunks))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                    if found != i64::from(head.chunks) {
                        return Err(corrupt(head.batch, head.chunks, found).into());
                    }
                    head.len = size.max(0) as u64;
                    for seq in 0..head.chunks {
                        let row = sqlx::query(
                            "SELECT body FROM ledger_checkpoint_chunks \
                             WHERE bank = ? AND batch = ? AND seq = ?",
                        )
                        .bind(bank as i64)
                        .bind(head.batch as i64)
                        .bind(i64::from(seq))
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(StoreError::from)?;
                        let Some(row) = row else {
                            return Err(corrupt(head.batch, head.chunks, i64::from(seq)).into());
                        };
                        let body: &[u8] = row.try_get(0).map_err(StoreError::from)?;
                        piece(&head, body)?;
                    }
                }
                tx.commit().await.map_err(StoreError::from)?;
                Ok(Some(head))
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(StoreError::from)?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                let row = sqlx::query(
                    "SELECT batch, ts, chunks, body FROM ledger_checkpoints WHERE bank = $1",
                )
                .bind(bank as i32)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from)?;
                let Some(row) = row else {
                    // Ended here rather than dropped: a dropped transaction
                    // holds its connection until a rollback runs later.
                    tx.commit().await.map_err(StoreError::from)?;
                    return Ok(None);
                };
                let mut head = head(
                    row.try_get(0).map_err(StoreError::from)?,
                    row.try_get(1).map_err(StoreError::from)?,
                    i64::from(row.try_get::<i32, _>(2).map_err(StoreError::from)?),
                )?;
                if head.chunks == 0 {
                    let body: &[u8] = row.try_get(3).map_err(StoreError::from)?;
                    head.len = body.len() as u64;
                    piece(&head, body)?;
                } else {
                    drop(row);
                    let counted = sqlx::query(
                        "SELECT COUNT(*), COALESCE(SUM(octet_length(body)), 0)::BIGINT \
                         FROM ledger_checkpoint_chunks WHERE bank = $1 AND batch = $2 AND seq < $3",
                    )
                    .bind(bank as i32)
                    .bind(head.batch as i64)
                    .bind(head.chunks as i32)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                    let found: i64 = counted.try_get(0).map_err(StoreError::from)?;
                    let size: i64 = counted.try_get(1).map_err(StoreError::from)?;
                    if found != i64::from(head.chunks) {
                        return Err(corrupt(head.batch, head.chunks, found).into());
                    }
                    head.len = size.max(0) as u64;
                    for seq in 0..head.chunks {
                        let row = sqlx::query(
                            "SELECT body FROM ledger_checkpoint_chunks \
                             WHERE bank = $1 AND batch = $2 AND seq = $3",
                        )
                        .bind(bank as i32)
                        .bind(head.batch as i64)
                        .bind(seq as i32)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(StoreError::from)?;
                        let Some(row) = row else {
                            return Err(corrupt(head.batch, head.chunks, i64::from(seq)).into());
                        };
                        let body: &[u8] = row.try_get(0).map_err(StoreError::from)?;
                        piece(&head, body)?;
                    }
                }
                tx.commit().await.map_err(StoreError::from)?;
                Ok(Some(head))
            }
        }
    }

    /// The batch a bank's checkpoint includes, without reading its body.
    pub async fn checkpoint_batch(&self, bank: u16) -> Result<Option<u64>, StoreError> {
        const SQL: &str = "SELECT batch FROM ledger_checkpoints WHERE bank = $1";
        let batch: Option<i64> = match self {
            Store::Sqlite(pool) => {
                sqlx::query_scalar(SQL)
                    .bind(bank as i64)
                    .fetch_optional(pool)
                    .await?
            }
            Store::Postgres(pool) => {
                sqlx::query_scalar(SQL)
                    .bind(bank as i32)
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(batch.map(|b| b as u64))
    }

    /// Whether the bank has a checkpoint (without reading it).
    pub async fn has_checkpoint(&self, bank: u16) -> Result<bool, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM ledger_checkpoints WHERE bank = $1";
        Ok(match self {
            Store::Sqlite(pool) => {
                sqlx::query(SQL)
                    .bind(bank as i64)
                    .fetch_one(pool)
                    .await?
                    .get::<i64, _>(0)
                    > 0
            }
            Store::Postgres(pool) => {
                sqlx::query(SQL)
                    .bind(bank as i32)
                    .fetch_one(pool)
                    .await?
                    .get::<i64, _>(0)
                    > 0
            }
        })
    }

    /// Each bank's newest journaled batch and the journal's batch count, to
    /// tell whether the journal changed between two reads.
    pub async fn journal_heads(&self) -> Result<Vec<(u16, u64, u64)>, StoreError> {
        const HEADS: &str =
            "SELECT bank, MAX(batch), COUNT(*) FROM ledger_batches GROUP BY bank ORDER BY bank";
        let rows = match self {
            Store::Sqlite(pool) => sqlx::query(HEADS)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| {
                    (
                        r.get::<i64, _>(0) as u16,
                        r.get::<i64, _>(1) as u64,
                        r.get::<i64, _>(2) as u64,
                    )
                })
                .collect(),
            Store::Postgres(pool) => sqlx::query(HEADS)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| {
                    (
                        r.get::<i32, _>(0) as u16,
                        r.get::<i64, _>(1) as u64,
                        r.get::<i64, _>(2) as u64,
                    )
                })
                .collect(),
        };
        Ok(rows)
    }

    /// Up to `limit` of a bank's batches with sequence number ≥ `from`, in order.
    pub async fn batches_from(
        &self,
        bank: u16,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredBatch>, StoreError> {
        let rows = match self {
            Store::Sqlite(pool) => {
                sqlx::query("SELECT batch, ts, commands FROM ledger_batches WHERE key >= ? AND key < ? ORDER BY key LIMIT ?")
                    .bind(sqlite_key(bank, from.min((1 << SQLITE_BANK_SHIFT) - 1)))
                    .bind(sqlite_key(bank + 1, 0))
                    .bind(limit as i64)
                    .fetch_all(pool)
                    .await?
                    .into_iter()
                    .map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1), r.get::<Vec<u8>, _>(2)))
                    .collect::<Vec<_>>()
            }
            Store::Postgres(pool) => {
                sqlx::query("SELECT batch, ts, commands FROM ledger_batches WHERE bank = $1 AND batch >= $2 ORDER BY batch LIMIT $3")
                    .bind(bank as i32)
                    .bind(from as i64)
                    .bind(limit as i64)
                    .fetch_all(pool)
                    .await?
                    .into_iter()
                    .map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1), r.get::<Vec<u8>, _>(2)))
                    .collect::<Vec<_>>()
            }
        };
        Ok(rows
            .into_iter()
            .map(|(batch, ts, commands)| StoredBatch {
                batch: batch as u64,
                ts: ts as u64,
                commands,
            })
            .collect())
    }

    /// Every account's balance as the postings journal says: (bank, account,
    /// credits − debits). Used by `audit` to re-derive balances.
    pub async fn derived_balances(&self) -> Result<Vec<(u16, u64, i128)>, StoreError> {
        // Rows written before postings were packed, then the blobs.
        let mut sums: std::collections::BTreeMap<(u16, u64), i128> = match self {
            Store::Sqlite(pool) => sqlx::query(
                "SELECT bank, account, SUM(delta) FROM ( \
                   SELECT key >> 40 AS bank, credit AS account, amount AS delta FROM ledger_postings \
                   UNION ALL SELECT key >> 40 AS bank, debit AS account, -amount AS delta FROM ledger_postings \
                 ) t GROUP BY bank, account",
            )
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| {
                (
                    (r.get::<i64, _>(0) as u16, r.get::<i64, _>(1) as u64),
                    r.get::<i64, _>(2) as i128,
                )
            })
            .collect(),
            Store::Postgres(pool) => sqlx::query(
                "SELECT bank, account, SUM(delta)::text FROM ( \
                   SELECT bank, credit AS account, amount AS delta FROM ledger_postings \
                   UNION ALL SELECT bank, debit AS account, -amount AS delta FROM ledger_postings \
                 ) t GROUP BY bank, account",
            )
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| {
                let s: String = r.get(2);
                (
                    (r.get::<i32, _>(0) as u16, r.get::<i64, _>(1) as u64),
                    s.parse::<i128>().unwrap_or(i128::MAX),
                )
            })
            .collect(),
        };
        for (bank, _, postings) in packed_postings(self, None, 0).await? {
            for p in postings {
                *sums.entry((bank, p.credit)).or_default() += i128::from(p.amount);
                *sums.entry((bank, p.debit)).or_default() -= i128::from(p.amount);
            }
        }
        Ok(sums.into_iter().map(|((b, a), s)| (b, a, s)).collect())
    }

    /// Posting count and the highest posting id + 1 per bank (gapless check).
    pub async fn posting_counts(&self) -> Result<Vec<(u16, u64, u64)>, StoreError> {
        let mut counts: std::collections::BTreeMap<u16, (u64, u64)> = match self {
            Store::Sqlite(pool) => sqlx::query(
                "SELECT key >> 40, COUNT(*), COALESCE(MAX(key & 1099511627775) + 1, 0) \
                 FROM ledger_postings GROUP BY key >> 40",
            )
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| {
                (
                    r.get::<i64, _>(0) as u16,
                    (r.get::<i64, _>(1) as u64, r.get::<i64, _>(2) as u64),
                )
            })
            .collect(),
            Store::Postgres(pool) => sqlx::query(
                "SELECT bank, COUNT(*), COALESCE(MAX(id) + 1, 0) FROM ledger_postings GROUP BY bank",
            )
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| {
                (
                    r.get::<i32, _>(0) as u16,
                    (r.get::<i64, _>(1) as u64, r.get::<i64, _>(2) as u64),
                )
            })
            .collect(),
        };
        for (bank, _, postings) in packed_postings(self, None, 0).await? {
            let (count, next) = counts.entry(bank).or_default();
            *count += postings.len() as u64;
            if let Some(last) = postings.last() {
                *next = (*next).max(last.id + 1);
            }
        }
        Ok(counts.into_iter().map(|(b, (c, n))| (b, c, n)).collect())
    }

    /// A bank's postings with batch ≥ `from_batch`, in id order (for audit).
    pub async fn postings_from(
        &self,
        bank: u16,
        from_batch: u64,
    ) -> Result<Vec<StoredPosting>, StoreError> {
        let mut rows: Vec<StoredPosting> = match self {
            Store::Sqlite(pool) => sqlx::query(
                "SELECT batch, key & 1099511627775, cmd, debit, credit, amount, kind FROM ledger_postings \
                 WHERE key >= ? AND key < ? AND batch >= ? ORDER BY key",
            )
            .bind(sqlite_key(bank, 0))
            .bind(sqlite_key(bank + 1, 0))
            .bind(from_batch as i64)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| StoredPosting {
                batch: r.get::<i64, _>(0) as u64,
                id: r.get::<i64, _>(1) as u64,
                cmd: r.get::<i64, _>(2) as u32,
                debit: r.get::<i64, _>(3) as u64,
                credit: r.get::<i64, _>(4) as u64,
                amount: r.get::<i64, _>(5) as u64,
                kind: r.get::<i64, _>(6) as i16,
            })
            .collect(),
            Store::Postgres(pool) => sqlx::query(
                "SELECT batch, id, cmd, debit, credit, amount, kind FROM ledger_postings \
                 WHERE bank = $1 AND batch >= $2 ORDER BY id",
            )
            .bind(bank as i32)
            .bind(from_batch as i64)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| StoredPosting {
                batch: r.get::<i64, _>(0) as u64,
                id: r.get::<i64, _>(1) as u64,
                cmd: r.get::<i32, _>(2) as u32,
                debit: r.get::<i64, _>(3) as u64,
                credit: r.get::<i64, _>(4) as u64,
                amount: r.get::<i64, _>(5) as u64,
                kind: r.get::<i16, _>(6),
            })
            .collect(),
        };
        for (_, batch, postings) in packed_postings(self, Some(bank), from_batch).await? {
            rows.extend(postings.into_iter().map(|p| StoredPosting {
                batch,
                id: p.id,
                cmd: p.cmd,
                debit: p.debit,
                credit: p.credit,
                amount: p.amount,
                kind: p.kind,
            }));
        }
        rows.sort_by_key(|p| p.id);
        Ok(rows)
    }

    /// Store (or replace) a bank's wrapped PIN verification key.
    pub async fn put_bank_key(&self, bank: u16, wrapped: &[u8]) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                sqlx::query("INSERT INTO bank_keys (bank, pvk) VALUES (?, ?) ON CONFLICT (bank) DO UPDATE SET pvk = excluded.pvk")
                    .bind(bank as i64)
                    .bind(wrapped)
                    .execute(pool)
                    .await?;
            }
            Store::Postgres(pool) => {
                sqlx::query("INSERT INTO bank_keys (bank, pvk) VALUES ($1, $2) ON CONFLICT (bank) DO UPDATE SET pvk = excluded.pvk")
                    .bind(bank as i32)
                    .bind(wrapped)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Every bank's wrapped PIN verification key.
    pub async fn bank_keys(&self) -> Result<Vec<(u16, Vec<u8>)>, StoreError> {
        Ok(match self {
            Store::Sqlite(pool) => sqlx::query("SELECT bank, pvk FROM bank_keys ORDER BY bank")
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| (r.get::<i64, _>(0) as u16, r.get::<Vec<u8>, _>(1)))
                .collect(),
            Store::Postgres(pool) => sqlx::query("SELECT bank, pvk FROM bank_keys ORDER BY bank")
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| (r.get::<i32, _>(0) as u16, r.get::<Vec<u8>, _>(1)))
                .collect(),
        })
    }

    /// Insert or replace terminals (one transaction).
    #[allow(clippy::needless_range_loop)] // see `append_inner`
    pub async fn put_terminals(&self, rows: &[TerminalRow]) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for i in 0..rows.len() {
                    let t = &rows[i];
                    sqlx::query("INSERT OR REPLACE INTO terminals (terminal_id, merchant_id, kind, bank, mcc, pin_key, mac_key) VALUES (?, ?, ?, ?, ?, ?, ?)")
                        .bind(&t.terminal_id)
                        .bind(&t.merchant_id)
                        .bind(&t.kind)
                        .bind(t.bank as i64)
                        .bind(&t.mcc)
                        .bind(&t.pin_key[..])
                        .bind(t.mac_key.as_deref())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for i in 0..rows.len() {
                    let t = &rows[i];
                    sqlx::query("INSERT INTO terminals (terminal_id, merchant_id, kind, bank, mcc, pin_key, mac_key) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                                 ON CONFLICT (terminal_id, merchant_id) DO UPDATE SET kind = excluded.kind, bank = excluded.bank, mcc = excluded.mcc, pin_key = excluded.pin_key, mac_key = excluded.mac_key")
                        .bind(&t.terminal_id)
                        .bind(&t.merchant_id)
                        .bind(&t.kind)
                        .bind(t.bank as i32)
                        .bind(&t.mcc)
                        .bind(&t.pin_key[..])
                        .bind(t.mac_key.as_deref())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Every registered terminal.
    pub async fn terminals(&self) -> Result<Vec<TerminalRow>, StoreError> {
        const SQL: &str = "SELECT terminal_id, merchant_id, kind, bank, mcc, pin_key, mac_key FROM terminals ORDER BY terminal_id, merchant_id";
        Ok(match self {
            Store::Sqlite(pool) => sqlx::query(SQL)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| TerminalRow {
                    terminal_id: r.get(0),
                    merchant_id: r.get(1),
                    kind: r.get(2),
                    bank: r.get::<i64, _>(3) as u16,
                    mcc: r.get(4),
                    pin_key: r.get(5),
                    mac_key: r.get(6),
                })
                .collect(),
            Store::Postgres(pool) => sqlx::query(SQL)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| TerminalRow {
                    terminal_id: r.get(0),
                    merchant_id: r.get(1),
                    kind: r.get(2),
                    bank: r.get::<i32, _>(3) as u16,
                    mcc: r.get(4),
                    pin_key: r.get(5),
                    mac_key: r.get(6),
                })
                .collect(),
        })
    }

    /// Close the pool (flushes SQLite's WAL state cleanly).
    pub async fn close(&self) {
        match self {
            Store::Sqlite(p) => p.close().await,
            Store::Postgres(p) => p.close().await,
        }
    }
}
