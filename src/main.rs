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
    /// Create a synthetic population: families, one KKS card each, e-Warong
    /// and agents; writes cards.csv, terminals.csv, families.csv.
    Seed(SeedArgs),
    /// Credit one program's period from a payment-order file or from the
    /// families' entitlements (idempotent per family and tahap/month).
    Disburse(DisburseArgs),
    /// One-command start: seed ./kks-demo/ on an empty database, disburse
    /// the current period of both programs, then serve.
    Demo(DemoArgs),
    /// Card lifecycle: activate, set-pin, block, unblock, replace.
    Card {
        #[command(subcommand)]
        op: CardCmd,
    },
    /// Dormant sweep: block cards unused for 90 days, return credits unspent
    /// after 105 days to the treasury; writes a report.
    Sweep {
        /// The day the rules are evaluated at (00:00 WIB).
        #[arg(long)]
        as_of: String,
        /// Report CSV (default sweep-<date>.csv).
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CardCmd {
    /// Inactive → active.
    Activate(PanArg),
    /// New PIN; also lifts a PIN-tries block.
    SetPin {
        #[command(flatten)]
        pan: PanArg,
        /// The new 6-digit PIN.
        #[arg(long)]
        pin: String,
    },
    /// Block by the bank (62 until unblocked).
    Block(PanArg),
    /// Lift a bank, dormant or PIN-tries block.
    Unblock(PanArg),
    /// Lost card: balances move to a new card, the old one is closed.
    Replace {
        #[command(flatten)]
        pan: PanArg,
        /// The new card's number (default: drawn on the bank's test BIN).
        #[arg(long)]
        new_pan: Option<String>,
        /// The new card's PIN (default: drawn; printed).
        #[arg(long)]
        pin: Option<String>,
    },
}

#[derive(Args)]
struct PanArg {
    /// The card number.
    #[arg(long)]
    pan: String,
}

#[derive(Args)]
struct SeedArgs {
    /// Number of families.
    #[arg(long)]
    families: u64,
    /// Seed of the population (same N and seed give byte-identical files).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for cards.csv, terminals.csv and families.csv.
    #[arg(long)]
    out: PathBuf,
    /// Share of terminals given a MAC key (0..=1).
    #[arg(long, default_value_t = kks_switch::seed::MAC_SHARE_DEFAULT)]
    mac_share: f64,
    /// Do not write the CSV files (bulk fixtures for benches).
    #[arg(long)]
    no_files: bool,
}

#[derive(Args)]
struct DisburseArgs {
    /// PKH or BPNT.
    #[arg(long)]
    program: String,
    /// PKH: 2026-T1..2026-T4; BPNT: 2026-01 or 2026-01..2026-03.
    #[arg(long)]
    period: String,
    /// Payment-order CSV (specs/disbursement.md); without it, the families'
    /// entitlements.
    #[arg(long)]
    orders: Option<PathBuf>,
    /// Change nothing; print the same summary.
    #[arg(long)]
    dry_run: bool,
    /// Where to write the reject report.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Args)]
struct DemoArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long)]
    listen: Option<String>,
    /// Directory for the demo population's files.
    #[arg(long, default_value = kks_switch::demo::DEMO_DIR)]
    dir: PathBuf,
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
        Cmd::Seed(a) => rt.block_on(seed_cmd(cfg, a)),
        Cmd::Disburse(a) => rt.block_on(disburse_cmd(cfg, a)),
        Cmd::Card { op } => rt.block_on(card_cmd(cfg, op)),
        Cmd::Sweep { as_of, report } => rt.block_on(sweep_cmd(cfg, as_of, report)),
        Cmd::Demo(a) => {
            if let Some(v) = a.listen.clone() {
                cfg.server.listen = v;
            }
            rt.block_on(demo_cmd(cfg, a))
        }
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
    let configs = match kks_switch::service::ledger_configs(&cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kks-switch audit: {e}");
            return ExitCode::from(2);
        }
    };
    let store = match Store::open(&cfg.store.db).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kks-switch audit: {e}");
            return ExitCode::FAILURE;
        }
    };
    let t = std::time::Instant::now();
    let report = match kks_switch::audit::audit(&store, &configs, json).await {
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

/// The program rules: built in, with the configuration's BPNT rule set.
fn programs(cfg: &Config) -> Result<kks_switch::programs::Programs, ExitCode> {
    cfg.programs().map_err(|e| {
        eprintln!("kks-switch: {e}");
        ExitCode::from(2)
    })
}

async fn seed_cmd(cfg: Config, a: SeedArgs) -> ExitCode {
    let programs = match programs(&cfg) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let master = match cfg.master_key() {
        Ok((m, _)) => m,
        Err(e) => {
            eprintln!("kks-switch seed: {e}");
            return ExitCode::from(2);
        }
    };
    let store = match Store::open(&cfg.store.db).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kks-switch seed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sc = kks_switch::seed::SeedConfig {
        families: a.families,
        seed: a.seed,
        out: a.out.clone(),
        mac_share: a.mac_share,
        skip_files: a.no_files,
    };
    let r = kks_switch::seed::run(
        &cfg.store.db,
        &store,
        &programs,
        &master,
        cfg.shards.clone(),
        &sc,
    )
    .await;
    store.close().await;
    match r {
        Ok(r) => {
            let banks: Vec<String> = r.per_bank.iter().map(|(b, n)| format!("{b} {n}")).collect();
            println!(
                "seeded {} families ({}), {} e-Warong, {} agents ({} with MAC) in {:.2} s",
                r.families,
                banks.join(", "),
                r.ewarong,
                r.agents,
                r.mac_terminals,
                r.seconds
            );
            if !a.no_files {
                println!("files: {}", a.out.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kks-switch seed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn disburse_cmd(cfg: Config, a: DisburseArgs) -> ExitCode {
    let programs = match programs(&cfg) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let Some(program) = kks_switch::programs::parse_program(&a.program) else {
        eprintln!("kks-switch disburse: --program must be PKH or BPNT");
        return ExitCode::from(2);
    };
    let store = match Store::open(&cfg.store.db).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kks-switch disburse: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dc = kks_switch::disbursement::DisburseConfig {
        program,
        period: a.period,
        orders: a.orders,
        dry_run: a.dry_run,
        report: a.report,
    };
    let r =
        kks_switch::disbursement::run(&cfg.store.db, &store, &programs, cfg.shards.clone(), &dc)
            .await;
    store.close().await;
    match r {
        Ok(s) => {
            println!("{s}");
            if s.reconciles() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("kks-switch disburse: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo_cmd(cfg: Config, a: DemoArgs) -> ExitCode {
    let programs = match programs(&cfg) {
        Ok(p) => p,
        Err(c) => return c,
    };
    match kks_switch::demo::prepare(&cfg, &programs, &a.dir).await {
        Ok(p) => {
            if p.seeded {
                eprintln!("seeded {} families", kks_switch::demo::DEMO_FAMILIES);
            }
            for s in &p.summaries {
                eprintln!("{s}");
            }
            println!("cards: {}", p.dir.join("cards.csv").display());
            println!("terminals: {}", p.dir.join("terminals.csv").display());
        }
        Err(e) => {
            eprintln!("kks-switch demo: {e}");
            return ExitCode::FAILURE;
        }
    }
    serve(cfg).await
}

async fn card_cmd(cfg: Config, op: CardCmd) -> ExitCode {
    use kks_switch::lifecycle::{card, CardOp};
    let programs = match programs(&cfg) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let master = match cfg.master_key() {
        Ok((m, _)) => m,
        Err(e) => {
            eprintln!("kks-switch card: {e}");
            return ExitCode::from(2);
        }
    };
    let (pan, op, what) = match op {
        CardCmd::Activate(p) => (p.pan, CardOp::Activate, "activated"),
        CardCmd::SetPin { pan, pin } => (pan.pan, CardOp::SetPin(pin), "PIN set"),
        CardCmd::Block(p) => (p.pan, CardOp::Block, "blocked"),
        CardCmd::Unblock(p) => (p.pan, CardOp::Unblock, "unblocked"),
        CardCmd::Replace { pan, new_pan, pin } => {
            (pan.pan, CardOp::Replace { new_pan, pin }, "replaced")
        }
    };
    let store = match Store::open(&cfg.store.db).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kks-switch card: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = card(
        &cfg.store.db,
        &store,
        &programs,
        &master,
        cfg.shards.clone(),
        &pan,
        op,
    )
    .await;
    store.close().await;
    match r {
        Ok(r) => {
            println!("{} {what}", kks_switch::pan::mask_pan(&pan));
            if let Some((p, pin)) = r.new_card {
                println!("new card: pan {p} pin {pin}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kks-switch card: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn sweep_cmd(cfg: Config, as_of: String, report: Option<PathBuf>) -> ExitCode {
    let programs = match programs(&cfg) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let path = report.unwrap_or_else(|| PathBuf::from(format!("sweep-{as_of}.csv")));
    let mut buf = Vec::new();
    let r = kks_switch::lifecycle::sweep(
        &cfg.store.db,
        &programs,
        cfg.shards.clone(),
        &as_of,
        &mut buf,
    )
    .await;
    match r {
        Ok(r) => {
            if let Err(e) = std::fs::write(&path, &buf) {
                eprintln!("kks-switch sweep: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            let blocked = r.lines.iter().filter(|(_, l)| l.blocked).count();
            let returned: u128 = r
                .lines
                .iter()
                .map(|(_, l)| u128::from(l.returned[0]) + u128::from(l.returned[1]))
                .sum();
            println!(
                "sweep as of {as_of}: {blocked} card(s) blocked as dormant, Rp {} returned to the treasury from {} card(s); report {}",
                kks_switch::programs::rupiah(returned),
                r.lines.iter().filter(|(_, l)| l.returned != [0, 0]).count(),
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kks-switch sweep: {e}");
            ExitCode::FAILURE
        }
    }
}
