//! Logging set-up: `tracing` with a human format by default or JSON lines by
//! flag. Card numbers reach a log line only through [`mask_pan`]; PIN blocks
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

/// A card number as it may appear in logs: first 6 and last 4 digits, the
/// middle replaced by `*`. Anything of 10 characters or fewer is masked whole.
pub fn mask_pan(pan: &[u8]) -> String {
    let n = pan.len();
    if n <= 10 {
        return "*".repeat(n);
    }
    let mut s = String::with_capacity(n);
    s.extend(
        pan[..6]
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }),
    );
    s.extend(std::iter::repeat_n('*', n - 10));
    s.extend(
        pan[n - 4..]
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_pans() {
        assert_eq!(mask_pan(b"6000020000000120"), "600002******0120");
        assert_eq!(mask_pan(b"1234567890"), "**********");
        assert_eq!(mask_pan(b""), "");
    }
}
