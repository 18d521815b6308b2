//! The database writer lock (INTERFACE §8): `seed`, `disburse`, `card` and
//! `sweep` working on the database directly hold it, and so does `serve`,
//! so that one bank's books never have two writers (DESIGN §3).
//!
//! - SQLite: a lock file beside the database, `<path>.lock`, created with
//!   `create_new` and holding the holder's pid and name. It is removed when
//!   the lock is dropped. A lock file left by a process that no longer runs
//!   (kill -9) is taken over: on Linux the pid is checked in `/proc`;
//!   elsewhere the file must be removed by hand (the error says so).
//! - PostgreSQL: a session advisory lock keyed by the schema, on a
//!   connection of its own; the server releases it when that session ends,
//!   however the process ended.

use crate::storage::{PgLock, Store, StoreError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A held writer lock; released on drop.
#[derive(Debug)]
pub enum DbLock {
    /// The SQLite lock file we created.
    File(PathBuf),
    /// The PostgreSQL advisory lock's session.
    Pg(PgLock),
    /// Nothing to lock (an in-memory SQLite database).
    Unneeded,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the database is in use by {holder} (pid {pid}, lock file {path}); stop it first, or remove the lock file if that process is gone")]
    HeldFile {
        holder: String,
        pid: String,
        path: String,
    },
    #[error("the database is in use by another kks-switch process (PostgreSQL advisory lock held); stop it first")]
    HeldPg,
    #[error("lock file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The lock file of a `sqlite://PATH` URL (`None` for PostgreSQL and for
/// in-memory SQLite).
pub fn sqlite_lock_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    Some(PathBuf::from(format!("{path}.lock")))
}

fn process_gone(pid: &str) -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    match pid.trim().parse::<u32>() {
        Ok(p) => !Path::new(&format!("/proc/{p}")).exists(),
        Err(_) => false,
    }
}

impl DbLock {
    /// Take the writer lock of the database at `url` (opened as `store`),
    /// naming the holder (e.g. `kks-switch disburse`) for whoever finds it
    /// taken.
    pub async fn acquire(url: &str, store: &Store, holder: &str) -> Result<DbLock, LockError> {
        if let Store::Postgres(_) = store {
            return match store.try_pg_lock().await? {
                Some(l) => Ok(DbLock::Pg(l)),
                None => Err(LockError::HeldPg),
            };
        }
        let Some(path) = sqlite_lock_path(url) else {
            return Ok(DbLock::Unneeded);
        };
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    writeln!(f, "{}\n{holder}", std::process::id()).map_err(io)?;
                    return Ok(DbLock::File(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut lines = text.lines();
                    let pid = lines.next().unwrap_or("?").to_string();
                    let who = lines.next().unwrap_or("another process").to_string();
                    if process_gone(&pid) {
                        tracing::warn!(path = %path.display(), pid, "taking over a lock file left by a process that is gone");
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    return Err(LockError::HeldFile {
                        holder: who,
                        pid,
                        path: path.display().to_string(),
                    });
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(io(std::io::Error::other("lock file keeps reappearing")))
    }
}

impl Drop for DbLock {
    fn drop(&mut self) {
        if let DbLock::File(p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_paths() {
        assert_eq!(
            sqlite_lock_path("sqlite://kks.db"),
            Some(PathBuf::from("kks.db.lock"))
        );
        assert_eq!(
            sqlite_lock_path("sqlite:///tmp/x/kks.db?mode=rwc"),
            Some(PathBuf::from("/tmp/x/kks.db.lock"))
        );
        assert_eq!(sqlite_lock_path("sqlite::memory:"), None);
        assert_eq!(sqlite_lock_path("postgres://u@h/db"), None);
    }
}
