//! The `kks-switch` command line: parse arguments, load configuration, call
//! into the library. See INTERFACE §8 and README.md.

use clap::{Args, Parser, Subcommand};
use kks_switch::config::Config;
use kks_switch::drill::{self, DrillConfig, Mode};
use kks_switch::iso8583::Framing;
use kks_switch::logging::{self, LogFormat};
use kks_switch::storage::Store;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "kks-switch",
    version,
    about = "ISO 8583 issuer host for the KKS welfare card"
)]
struct Cli {
    /// Configuration file (TOML); flags override its values.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Ledger database: sqlite://PATH or postgres://...
    #[arg(long, global = true)]
    db: Option<String>,
    /// Log format on standard error.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Answer ISO 8583 on --listen; prints "listening on ADDR" when ready.
    Serve(ServeArgs),
    /// Re-derive every balance from the journal and check the ledger's
    /// invariants; exits 1 on any violation.
    Audit {
        /// Also print per-card balances and approved sums as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drive the shard and storage path with synthetic money movements (crash
    /// test and durable-commit bench; no wire involved).
    Drill(DrillArgs),
}

#[derive(Args)]
struct DrillArgs {
    /// Cards opened per bank on first run.
    #[arg(long, default_value_t = 10_000)]
    cards: u32,
    /// How long to run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// requests: one at a time per worker; bulk: runs of batch_size_max.
    #[arg(long, value_enum, default_value_t = Mode::Requests)]
    mode: Mode,
    /// Seed of the request stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print "ACK <bank> <key> <code>" for every durable answer.
    #[arg(long)]
    acks: bool,
    /// Commands per batch.
    #[arg(long)]
    batch_size_max: Option<usize>,
    /// Bulk mode: commands generated before timing starts.
    #[arg(long, default_value_t = 2_000_000)]
    commands: u64,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long)]
    listen: Option<String>,
    /// Length header: 2b or 4a.
    #[arg(long)]
    framing: Option<Framing>,
    /// Most connections served at once.
    #[arg(long)]
    connections_max: Option<usize>,
    /// Close connections idle for this many milliseconds.
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kks-switch: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(db) = cli.db {
        cfg.store.db = db;
    }
    if let Some(f) = cli.log_format {
        cfg.log.format = f;
    }
    logging::init(cfg.log.format, &cfg.log.filter);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kks-switch: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.cmd {
        Cmd::Serve(a) => {
            if let Some(v) = a.listen {
                cfg.server.listen = v;
            }
            if let Some(v) = a.framing {
                cfg.server.framing = v;
            }
            if let Some(v) = a.connections_max {
                cfg.server.connections_max = v;
            }
            if let Some(v) = a.idle_timeout_ms {
                cfg.server.idle_timeout_ms = v;
            }
            if let Err(e) = cfg.check() {
                eprintln!("kks-switch: {e}");
                return ExitCode::from(2);
            }
            rt.block_on(serve(cfg))
        }
        Cmd::Audit { json } => rt.block_on(audit(cfg, json)),
        Cmd::Drill(a) => {
            let mut shard = cfg.shards.clone();
            if let Some(b) = a.batch_size_max {
                shard.batch_size_max = b;
            }
            let dc = DrillConfig {
                cards_per_bank: a.cards,
                seconds: a.seconds,
                workers: a.workers,
                mode: a.mode,
                seed: a.seed,
                print_acks: a.acks,
                bulk_commands: a.commands,
            };
            match rt.block_on(drill::run(&cfg.store.db, dc, shard)) {
                Ok(r) => {
                    eprintln!(
                        "drill: {} commands, {} approved in {:.2} s = {:.0} commands/s, {:.0} approved/s; latency per submission p50 {} us, p99 {} us, max {} us",
                        r.commands,
                        r.approved,
                        r.seconds,
                        r.commands as f64 / r.seconds,
                        r.approved as f64 / r.seconds,
                        r.p50_us,
                        r.p99_us,
                        r.max_us
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kks-switch drill: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn audit(cfg: Config, json: bool) -> ExitCode {
    let store = match Store::open(&cfg.store.db).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kks-switch audit: {e}");
            return ExitCode::FAILURE;
        }
    };
    let t = std::time::Instant::now();
    let report = match kks_switch::audit::audit(&store, &drill::bank_configs(), json).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kks-switch audit: {e}");
            return ExitCode::FAILURE;
        }
    };
    store.close().await;
    if json {
        match serde_json::to_string(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("kks-switch audit: {e}"),
        }
    } else {
        for b in &report.banks {
            println!(
                "bank {:03}: {} batches, {} postings, {} accounts, {} cards, {} keys, wallets hold {}",
                b.bank, b.batches, b.postings, b.accounts, b.cards, b.keys, b.wallet_total
            );
        }
        for v in &report.violations {
            println!("VIOLATION bank {:03}: {}", v.bank, v.what);
        }
        println!(
            "audit {} in {:.2} s: {} violation(s)",
            if report.ok() { "clean" } else { "FAILED" },
            t.elapsed().as_secs_f64(),
            report.violations.len()
        );
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn serve(cfg: Config) -> ExitCode {
    let running = match kks_switch::service::start(cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kks-switch: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(stop_on_signal(running.shutdown_token()));
    println!("listening on {}", running.addr);
    let _ = std::io::stdout().flush();
    match running.wait().await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kks-switch: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Cancel on SIGINT or SIGTERM: stop accepting, finish in-flight work.
async fn stop_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; finishing in-flight work");
    token.cancel();
}
