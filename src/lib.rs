//! kks-switch: the bank side of Indonesia's KKS welfare card.
//!
//! Module map (one line each):
//! - [`iso8583`]: pure ISO 8583:1987 codec (field table from `specs/fields.toml`), plus the tokio-util framing adapter.
//! - [`switch`]: the tokio TCP server: listener, connections, pipelining, limits, shutdown.
//! - [`crypto`]: PIN blocks (ISO 9564-0, 3DES), PIN verification values, HMAC MACs, zeroized keys and key wrapping.
//! - [`pan`]: the masked `Pan` newtype, Luhn, and the five banks' codes, names and test BINs.
//! - [`config`]: TOML configuration with CLI overrides; every option named and documented.
//! - [`logging`]: tracing subscriber set-up (human or JSON).
//! - [`storage`]: sqlx journal, postings and checkpoints on SQLite (default) or PostgreSQL; group commit.
pub mod audit;
pub mod config;
pub mod crypto;
pub mod drill;
pub mod iso8583;
pub mod ledger;
pub mod logging;
pub mod pan;
pub mod shard;
pub mod storage;
pub mod switch;
