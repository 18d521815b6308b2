//! kks-switch: the bank side of Indonesia's KKS welfare card.
//!
//! Module map (one line each):
//! - [`iso8583`]: pure ISO 8583:1987 codec (field table from `specs/fields.toml`), plus the tokio-util framing adapter.
//! - [`switch`]: the tokio TCP server: listener, connections, pipelining, limits, shutdown.
//! - [`config`]: TOML configuration with CLI overrides; every option named and documented.
//! - [`logging`]: tracing subscriber set-up (human or JSON) and masking helpers for card numbers.
//! - [`storage`]: sqlx journal, postings and checkpoints on SQLite (default) or PostgreSQL; group commit.
pub mod config;
pub mod iso8583;
pub mod logging;
pub mod storage;
pub mod switch;
