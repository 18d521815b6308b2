//! Store faults (issue 7, item 5), over real TCP against the `kks-switch
//! serve` binary:
//!
//! - SQLite locked: another connection holds a write transaction
//!   (`BEGIN IMMEDIATE`);
//! - PostgreSQL locked: another session holds `ACCESS EXCLUSIVE` on the
//!   journal table of the test's own schema;
//! - PostgreSQL unavailable: the server connects as a role of its own, which
//!   is then refused log-ins (`NOLOGIN`) and whose sessions are terminated
//!   (only that role's: other tests on the shared server are untouched).
//!
//! Each asserts: every request sent during the fault is answered 91 within
//! [`FAULT_ANSWER_MAX`] (a terminal waits 30 s); after the fault clears the
//! same server approves new requests by itself (no restart); the 91s left
//! nothing behind (balances unchanged), and each of them sent again byte for
//! byte is approved once and a second repeat gets the same answer without a
//! second debit; the audit of the store is clean and its balances agree.
//!
//! PostgreSQL tests follow the suite's rule: skipped with a message when no
//! server is reachable outside CI, failed under CI.

mod common;

use common::db::{admin_pool, Backend};
use common::fixture::*;
use kks_switch::iso8583::Fields;
use sqlx::{ConnectOptions, Connection, Executor};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The longest a request may wait for its 91 while the store is faulty.
const FAULT_ANSWER_MAX: Duration = Duration::from_secs(10);
/// The longest the server may take to approve again once the fault is gone.
const RESUME_MAX: Duration = Duration::from_secs(30);
/// Withdrawals sent during the fault (cards active(31..31+N)).
const DURING: u32 = 4;
const WARM: u32 = 30;
const FIRST: u32 = 31;
const PROBE: u32 = 38;

enum Fault {
    /// A SQLite connection in a write transaction.
    SqliteLock(sqlx::SqliteConnection),
    /// A PostgreSQL session holding an exclusive table lock.
    PgLock(sqlx::PgConnection),
    /// The server's role refused log-ins: (admin URL, role).
    PgDown(String, String),
}

impl Fault {
    async fn release(self) {
        match self {
            Fault::SqliteLock(mut c) => {
                c.execute("ROLLBACK")
                    .await
                    .expect("release the SQLite lock");
                let _ = c.close().await;
            }
            Fault::PgLock(mut c) => {
                c.execute("ROLLBACK").await.expect("release the table lock");
                let _ = c.close().await;
            }
            Fault::PgDown(base, role) => {
                let pool = admin_pool(&base).await.expect("admin connection");
                pool.execute(format!("ALTER ROLE {role} LOGIN").as_str())
                    .await
                    .expect("allow log-ins again");
                pool.close().await;
            }
        }
    }
}

fn field(f: &Fields, n: u8) -> String {
    String::from_utf8_lossy(f.fields.get(&n).expect("field present")).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_91_then_resumes() {
    let fx = Fixture::sqlite().await;
    let url = fx.url().to_string();
    run(&fx, &url, || async {
        let mut c = sqlx::sqlite::SqliteConnectOptions::from_str(fx.url())
            .expect("SQLite URL")
            .connect()
            .await
            .expect("second SQLite connection");
        c.execute("BEGIN IMMEDIATE")
            .await
            .expect("take the write lock");
        Fault::SqliteLock(c)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_locked_91_then_resumes() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    let url = fx.url().to_string();
    run(&fx, &url, || async {
        let mut c = sqlx::PgConnection::connect(fx.url())
            .await
            .expect("second PostgreSQL session");
        c.execute("BEGIN").await.expect("BEGIN");
        c.execute("LOCK TABLE ledger_batches IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock the journal table");
        Fault::PgLock(c)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unavailable_91_then_resumes() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    assert_eq!(fx.db.backend, Backend::Postgres);
    let base = fx.db.base_url.clone().expect("base URL");
    let schema = fx.db.schema.clone().expect("schema");
    let role = format!("{schema}_r");
    let admin = admin_pool(&base).await.expect("admin connection");
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT ALL ON SCHEMA {schema} TO {role}"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
    ] {
        admin
            .execute(sql.as_str())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // The same database and schema, as that role.
    let (scheme, rest) = fx.url().split_once("://").expect("URL scheme");
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    let url = format!("{scheme}://{role}@{host}");
    let (b2, r2) = (base.clone(), role.clone());
    run(&fx, &url, move || async move {
        let pool = admin_pool(&b2).await.expect("admin connection");
        pool.execute(format!("ALTER ROLE {r2} NOLOGIN").as_str())
            .await
            .expect("refuse log-ins");
        pool.execute(
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{r2}'"
            )
            .as_str(),
        )
        .await
        .expect("end the server's sessions");
        pool.close().await;
        Fault::PgDown(b2, r2)
    })
    .await;
    for sql in [
        format!("DROP OWNED BY {role}"),
        format!("DROP ROLE IF EXISTS {role}"),
    ] {
        if let Err(e) = admin.execute(sql.as_str()).await {
            eprintln!("warning: {sql}: {e}");
        }
    }
    admin.close().await;
}

/// The scenario of the module header on the fixture `fx`, the server
/// connecting with `url`, the fault injected by `inject`.
async fn run<F, Fut>(fx: &Fixture, url: &str, inject: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Fault>,
{
    let tmp = tempfile::tempdir().expect("temp dir");
    let log = tmp.path().join("serve.log");
    let srv = spawn_serve(url, &log, &[("RUST_LOG", "warn")]);
    let mut c = Client::connect(srv.addr).await;
    let warm = withdrawal(&AGENT, &active(WARM).pan(), 1_000_000);
    let r = c.call(&AGENT, &warm).await;
    assert_eq!(r.code(), "00", "before the fault: {r:?}");
    // On a failure below, the server's log is shown.
    struct ShowLog(std::path::PathBuf);
    impl Drop for ShowLog {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let text = std::fs::read_to_string(&self.0).unwrap_or_default();
                eprintln!("--- serve log\n{text}");
            }
        }
    }
    let _show = ShowLog(log.clone());

    let fault = inject().await;

    // During the fault: pipelined withdrawals, each answered 91 in time.
    let during: Vec<Fields> = (FIRST..FIRST + DURING)
        .map(|i| withdrawal(&AGENT, &active(i).pan(), 2_000_000))
        .collect();
    let t0 = Instant::now();
    for f in &during {
        c.send(&encode(f)).await;
    }
    let mut codes: HashMap<String, String> = HashMap::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..during.len() {
        let r = c.recv().await;
        slowest = slowest.max(t0.elapsed());
        codes.insert(r.get(11).unwrap_or("").to_string(), r.code().to_string());
    }
    for f in &during {
        assert_eq!(
            codes.get(&field(f, 11)).map(String::as_str),
            Some("91"),
            "answers during the fault: {codes:?}"
        );
    }
    assert!(
        slowest < FAULT_ANSWER_MAX,
        "91s took {slowest:?} (limit {FAULT_ANSWER_MAX:?})"
    );
    eprintln!("{} x 91 within {slowest:?}", during.len());

    // A second round while still faulty: still 91, still bounded (the shard
    // keeps trying to rebuild from the store and fails).
    let again = withdrawal(&AGENT, &active(FIRST + DURING).pan(), 2_000_000);
    let t1 = Instant::now();
    let r = c.call(&AGENT, &again).await;
    assert_eq!(r.code(), "91", "second round during the fault: {r:?}");
    assert!(t1.elapsed() < FAULT_ANSWER_MAX, "took {:?}", t1.elapsed());

    fault.release().await;

    // The same server approves again by itself: a fresh request every
    // 250 ms until one is approved (each 91 among them leaves nothing).
    let released = Instant::now();
    let probe_pan = active(PROBE).pan();
    loop {
        let f = withdrawal(&AGENT, &probe_pan, 1_000_000);
        let r = c.call(&AGENT, &f).await;
        match r.code() {
            "00" => break,
            "91" => {}
            other => panic!("after the fault: {other}: {r:?}"),
        }
        assert!(
            released.elapsed() < RESUME_MAX,
            "not approving {RESUME_MAX:?} after the fault cleared"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "approving again {:?} after the fault cleared",
        released.elapsed()
    );

    // The 91s left nothing: balances untouched.
    let all: Vec<Fields> = during.iter().chain([&again]).cloned().collect();
    for f in &all {
        let pan = field(f, 2);
        assert_eq!(
            c.balances(&AGENT, &pan).await,
            (PKH_CREDIT, BPNT_CREDIT),
            "a request answered 91 changed a balance"
        );
    }
    // Each sent again byte for byte: processed once, then replayed.
    for f in &all {
        let bytes = encode(f);
        let r1 = c.call_raw(&bytes).await;
        assert_eq!(r1.code(), "00", "repeat after the fault: {r1:?}");
        let r2 = c.call_raw(&bytes).await;
        assert_eq!(r2.code(), "00", "second repeat: {r2:?}");
        assert_eq!(
            r1.get(38),
            r2.get(38),
            "a repeat gets the same approval code"
        );
        let pan = field(f, 2);
        assert_eq!(
            c.balances(&AGENT, &pan).await,
            (PKH_CREDIT - 2_000_000, BPNT_CREDIT),
            "debited exactly once"
        );
    }
    drop(c);
    assert_eq!(srv.terminate(), Some(0), "serve exits 0 on SIGTERM");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("panicked"), "the server panicked:\n{text}");

    // The store itself: clean, with exactly these debits.
    assert_audit_clean(fx.url());
    let balances = audit_balances(fx.url());
    let pkh = |i: u32| balances.get(&active(i).pan()).map(|b| b.0);
    assert_eq!(pkh(WARM), Some((PKH_CREDIT - 1_000_000) as i64));
    assert_eq!(pkh(PROBE), Some((PKH_CREDIT - 1_000_000) as i64));
    for i in FIRST..=FIRST + DURING {
        assert_eq!(
            pkh(i),
            Some((PKH_CREDIT - 2_000_000) as i64),
            "card active({i})"
        );
    }
}
