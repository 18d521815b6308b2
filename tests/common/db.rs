//! Fresh databases for storage tests: a SQLite file in a temporary
//! directory, or a fresh schema in the PostgreSQL test database.
//!
//! PostgreSQL: `KKS_TEST_PG_URL` (CI sets `postgres://postgres@127.0.0.1:5432/test`),
//! else that same URL. Each test gets a schema `kks_t_<pid>_<counter>_<random>`
//! and a URL with `options=-csearch_path%3D<schema>`: sqlx passes `options` to
//! the server as start-up options, so every connection of the store (migrations
//! included) resolves unqualified names in that schema. The schema is dropped
//! when the [`TestDb`] is dropped (best effort).
//!
//! When the server cannot be reached: if `CI` or `KKS_TEST_PG_URL` is set the
//! helper panics ("PostgreSQL required in CI: ..."); otherwise it prints why
//! the test is skipped and returns `None`.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The URL used when `KKS_TEST_PG_URL` is unset (the CI default).
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Which backend a [`TestDb`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh store location. Keep it alive for as long as the URL is used.
pub struct TestDb {
    /// The URL to hand to `Store::open` or `kks-switch --db`.
    pub url: String,
    pub backend: Backend,
    /// PostgreSQL: the schema the URL points into.
    pub schema: Option<String>,
    /// PostgreSQL: the base URL (without the search_path option).
    pub base_url: Option<String>,
    dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A directory that lives as long as this database (SQLite: the file's
    /// directory; PostgreSQL: `None`).
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    /// A short label for messages.
    pub fn label(&self) -> String {
        match self.backend {
            Backend::Sqlite => "sqlite".into(),
            Backend::Postgres => format!(
                "postgres (schema {})",
                self.schema.as_deref().unwrap_or("?")
            ),
        }
    }
}

/// A random 64-bit value (std's per-process random hash keys, mixed with the
/// time), for names that must not collide across runs.
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u64(COUNTER.load(Ordering::Relaxed));
    h.finish()
}

/// A fresh SQLite database file in its own temporary directory.
pub fn sqlite() -> TestDb {
    let dir = tempfile::Builder::new()
        .prefix("kks-test-")
        .tempdir()
        .expect("temporary directory for the SQLite test store");
    let url = format!("sqlite://{}/kks.db", dir.path().display());
    TestDb {
        url,
        backend: Backend::Sqlite,
        schema: None,
        base_url: None,
        dir: Some(dir),
    }
}

/// The configured PostgreSQL URL and whether it was given explicitly.
fn pg_base_url() -> (String, bool) {
    match std::env::var("KKS_TEST_PG_URL") {
        Ok(u) if !u.trim().is_empty() => (u.trim().to_string(), true),
        _ => (DEFAULT_PG_URL.to_string(), false),
    }
}

/// Connect to the base URL with bounded waits.
pub async fn admin_pool(base: &str) -> Result<PgPool, String> {
    let connect = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect(base);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 10 s".into()),
    }
}

/// `url` with the start-up option that sets `search_path` to `schema`.
pub fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// A fresh schema in the PostgreSQL test database, or `None` (with the reason
/// on stderr) when no server is reachable outside CI.
pub async fn postgres() -> Option<TestDb> {
    let (base, explicit) = pg_base_url();
    let pool = match admin_pool(&base).await {
        Ok(p) => p,
        Err(e) => {
            if explicit || std::env::var_os("CI").is_some() {
                panic!(
                    "PostgreSQL required in CI: cannot connect to {base} ({e}); \
                     start the server or fix KKS_TEST_PG_URL"
                );
            }
            eprintln!(
                "SKIPPED (PostgreSQL): cannot connect to {base}: {e}; \
                 set KKS_TEST_PG_URL or CI to make this a failure"
            );
            return None;
        }
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let schema = format!(
        "kks_t_{}_{}_{:08x}",
        std::process::id(),
        n,
        random_u64() as u32
    );
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("creating schema {schema} on {base}: {e}"));
    pool.close().await;
    Some(TestDb {
        url: with_search_path(&base, &schema),
        backend: Backend::Postgres,
        schema: Some(schema),
        base_url: Some(base),
        dir: None,
    })
}

/// A fresh database of `backend`; `None` only for a skipped PostgreSQL.
pub async fn fresh(backend: Backend) -> Option<TestDb> {
    match backend {
        Backend::Sqlite => Some(sqlite()),
        Backend::Postgres => postgres().await,
    }
}

/// Drop a test schema (best effort, bounded waits).
pub async fn drop_schema(base: &str, schema: &str) -> Result<(), String> {
    let pool = admin_pool(base).await?;
    let r = async {
        sqlx::query("SET lock_timeout = '5s'")
            .execute(&pool)
            .await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&pool)
            .await
    }
    .await;
    pool.close().await;
    r.map(|_| ()).map_err(|e| e.to_string())
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (Some(base), Some(schema)) = (self.base_url.clone(), self.schema.clone()) else {
            return;
        };
        if std::env::var_os("KKS_TEST_KEEP_DB").is_some() {
            eprintln!("keeping schema {schema} (KKS_TEST_KEEP_DB)");
            return;
        }
        // Drop may run inside a tokio runtime: use a thread with its own.
        let t = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(20), drop_schema(&base, &schema))
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()))
            })
            .map_err(|e| format!("dropping schema {schema}: {e}"))
        });
        if let Ok(Err(e)) = t.join() {
            eprintln!("warning: {e} (left behind)");
        }
    }
}

/// Run `kks-switch ARGS` with a time limit: (exit code, stdout, stderr).
/// Killed (and `None` returned as code) when the limit passes.
pub fn run_cli(args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_kks-switch"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kks-switch");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait().expect("wait for kks-switch") {
            Some(s) => break Some(s),
            None if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let out = t_out.join().unwrap_or_default();
    let mut err = t_err.join().unwrap_or_default();
    if status.is_none() {
        err.push_str(&format!("\n[killed after {limit:?}]"));
    }
    (status.and_then(|s| s.code()), out, err)
}
