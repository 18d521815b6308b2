//! Configuration: a TOML file (`--config FILE`) whose every option has a
//! default, overridden by command-line flags. `config.example.toml` at the
//! repository root lists each option with its default and the reason for it;
//! a test keeps the two in step.

use crate::iso8583::Framing;
use crate::logging::LogFormat;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything the host can be told.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub shards: crate::shard::ShardConfig,
    pub rules: RulesConfig,
    pub programs: ProgramsSection,
    pub security: SecurityConfig,
    pub log: LogConfig,
}

/// Program rules chosen at run time.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// "food-only" (e-Warong era, default) or "cash-allowed" (since March 2023).
    pub bpnt_rule_set: String,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            bpnt_rule_set: "food-only".into(),
        }
    }
}

/// Where the program rules come from (`specs/programs.toml` is built in).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ProgramsSection {
    /// A programs file replacing the built-in one (empty: built in).
    pub file: String,
    /// BPNT cadence override: "monthly", "2-monthly" or "quarterly" (empty: as in the file).
    pub bpnt_cadence: String,
}

impl Config {
    /// The program rules under this configuration (rule set from `[rules]`).
    pub fn programs(&self) -> Result<crate::programs::Programs, ConfigError> {
        let pc = crate::programs::ProgramsConfig {
            file: self.programs.file.clone(),
            bpnt_cadence: self.programs.bpnt_cadence.clone(),
            rule_set: self.rules.bpnt_rule_set.clone(),
        };
        crate::programs::Programs::load(&pc).map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

/// Key material location. The master key never lives in the database.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Hex of the 32-byte master key; empty means the KKS_MASTER_KEY
    /// environment variable, else the documented test master key.
    pub master_key_hex: String,
}

impl Config {
    /// The BPNT rule set in force.
    pub fn rule_set(&self) -> crate::ledger::RuleSet {
        match self.rules.bpnt_rule_set.as_str() {
            "cash-allowed" => crate::ledger::RuleSet::CashAllowed,
            _ => crate::ledger::RuleSet::FoodOnly,
        }
    }

    /// The master key: config, else `KKS_MASTER_KEY`, else the test key
    /// (`true` in the second value when the test key is in use).
    pub fn master_key(&self) -> Result<(crate::crypto::MasterKey, bool), ConfigError> {
        let hex = if self.security.master_key_hex.is_empty() {
            std::env::var("KKS_MASTER_KEY").unwrap_or_default()
        } else {
            self.security.master_key_hex.clone()
        };
        if hex.trim().is_empty() {
            return Ok((crate::crypto::MasterKey::test_default(), true));
        }
        crate::crypto::MasterKey::from_hex(&hex)
            .map(|k| (k, false))
            .map_err(|e| ConfigError::Invalid(format!("master key: {e}")))
    }
}

/// The ISO 8583 listener and its limits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: String,
    /// Length header: "2b" (2-byte binary) or "4a" (4 ASCII digits).
    pub framing: Framing,
    /// Most connections served at once; further ones wait in the accept backlog.
    pub connections_max: usize,
    /// Most new connections accepted per second (0: no limit); a burst of a
    /// tenth of a second's worth is let through at once. Excess connects wait
    /// in the kernel's backlog, so a connect-and-close storm cannot take the
    /// CPU that established terminals need.
    pub accepts_per_second_max: u32,
    /// A connection with no complete frame for this long is closed.
    pub idle_timeout_ms: u64,
    /// A new connection whose first complete frame does not arrive within
    /// this long is closed (the shorter of this and `idle_timeout_ms`
    /// applies), so silent connections cannot hold the slots of a flood.
    pub first_frame_timeout_ms: u64,
    /// Most requests in flight on one connection; reading pauses beyond it.
    pub in_flight_per_connection_max: usize,
    /// On SIGINT/SIGTERM, how long in-flight work may take before exit.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8583".into(),
            framing: Framing::TwoByte,
            connections_max: 10_000,
            accepts_per_second_max: 2_000,
            idle_timeout_ms: 300_000,
            first_frame_timeout_ms: 10_000,
            in_flight_per_connection_max: 1024,
            shutdown_grace_ms: 30_000,
        }
    }
}

/// Where the ledger lives.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (embedded default) or `postgres://...`.
    pub db: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            db: "sqlite://kks.db".into(),
        }
    }
}

/// Log output.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// "human" or "json".
    pub format: LogFormat,
    /// Filter in RUST_LOG syntax; the RUST_LOG variable overrides it.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            filter: "info".into(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Parse TOML text; `origin` names the file in errors (toml's message
    /// carries the line and the key).
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        c.check()?;
        Ok(c)
    }

    /// Read a config file, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Ok(Config::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Config::from_toml(&text, &p.display().to_string())
            }
        }
    }

    /// Reject values that cannot work.
    pub fn check(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.connections_max == 0 {
            return Err(ConfigError::Invalid(
                "server.connections_max must be at least 1".into(),
            ));
        }
        if s.in_flight_per_connection_max == 0 {
            return Err(ConfigError::Invalid(
                "server.in_flight_per_connection_max must be at least 1".into(),
            ));
        }
        if s.idle_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "server.idle_timeout_ms must be at least 1".into(),
            ));
        }
        if s.first_frame_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "server.first_frame_timeout_ms must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_matches_defaults() {
        let text = include_str!("../config.example.toml");
        let c = Config::from_toml(text, "config.example.toml").unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = Config::from_toml("[server]\nconnections_max = \"many\"\n", "x.toml").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("x.toml") && m.contains("line 2") && m.contains("connections_max"),
            "{m}"
        );
        let e = Config::from_toml("[server]\nlisten_addr = \"x\"\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("listen_addr"), "{e}");
        let e = Config::from_toml("[server]\nframing = \"3x\"\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("framing"), "{e}");
    }
}
