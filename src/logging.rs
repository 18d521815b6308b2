//! Logging set-up: `tracing` with a human format by default or JSON lines by
//! flag. Card numbers reach a log line only through [`crate::pan::mask_pan_bytes`]; PIN blocks
//! (DE52) and MACs (DE64/DE128) are never logged at all.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Install the global subscriber. `filter` uses `RUST_LOG` syntax; the
/// `RUST_LOG` environment variable wins when set. Logs go to standard error so
/// that standard output carries only the lines partner scripts read
/// (`listening on ADDR`).
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
