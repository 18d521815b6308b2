//! kks-switch: the bank side of Indonesia's KKS welfare card.
//!
//! Module map (one line each):
//! - [`iso8583`]: pure ISO 8583:1987 codec (field table from `specs/fields.toml`), plus the tokio-util framing adapter.
//! - [`switch`]: the tokio TCP server: listener, connections, pipelining, limits, shutdown.
//! - [`crypto`]: PIN blocks (ISO 9564-0, 3DES), PIN verification values, HMAC MACs, zeroized keys and key wrapping.
//! - [`pan`]: the masked `Pan` newtype, Luhn, and the five banks' codes, names and test BINs.
//! - [`config`]: TOML configuration with CLI overrides; every option named and documented.
//! - [`logging`]: tracing subscriber set-up (human or JSON).
//! - [`admin`]: local admin endpoint of a running `serve`, and the [`admin::Writer`] the CLI writes through (endpoint or locked direct access).
//! - [`auth`]: ISO 8583 financial requests → ledger commands in INTERFACE §5 order; responses after durability.
//! - [`ledger`]: pure per-bank state machine: wallets, postings, idempotency keys, PIN tries, limits, sweep.
//! - [`service`]: the assembled host (store → shards → registry → listener) used by `serve`, `demo` and tests.
//! - [`shard`]: one writer per bank fed by bounded queues; group commit; recovery from checkpoint + journal.
//! - [`audit`]: re-derives balances from the journal and checks every invariant (`kks-switch audit`).
//! - [`dst`]: deterministic simulation of the core (fake clock and network, injected faults, an auditor after every step).
//! - [`drill`]: drives shards and storage with synthetic load (crash test, durable-commit bench).
//! - [`registry`]: terminals (DE41/DE42) and bank PIN verification keys, unwrapped in memory at start.
//! - [`programs`]: PKH/BPNT rules from `specs/programs.toml`: components, caps, tahap, cadence, periods, entitlements.
//! - [`seed`]: deterministic synthetic population: families, cards (PVV only), e-Warong and agents; CSV files.
//! - [`disbursement`]: payment orders → idempotent credits per (family, tahap/month) through the shards; reject report, reconciled summary.
//! - [`lifecycle`]: `kks-switch card` (activate, set PIN, block, unblock, replace) and `sweep` (dormant cards and unspent credits) as ledger commands.
//! - [`demo`]: `kks-switch demo`: seed a small population on an empty database and disburse the current periods.
//! - [`storage`]: sqlx journal, postings and checkpoints on SQLite (default) or PostgreSQL; group commit.
pub mod admin;
pub mod audit;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod disbursement;
pub mod drill;
pub mod dst;
pub mod iso8583;
pub mod ledger;
pub mod lifecycle;
pub mod logging;
pub mod pan;
pub mod programs;
pub mod registry;
pub mod seed;
pub mod service;
pub mod shard;
pub mod storage;
pub mod switch;
