//! `kks-switch demo`: a bank out of the box. On a database without
//! families it seeds a small population into `./kks-demo/`, then disburses
//! the current period of both programs (idempotent, so a second `demo` pays
//! nothing twice), and leaves serving to the caller.

use crate::config::Config;
use crate::disbursement::{self, DisburseConfig, Summary};
use crate::ledger::Program;
use crate::programs::{current_month_wib, Programs};
use crate::seed::{self, SeedConfig, MAC_SHARE_DEFAULT};
use crate::storage::Store;
use std::path::{Path, PathBuf};

/// Families seeded by `demo`.
pub const DEMO_FAMILIES: u64 = 1_000;
/// The demo population's seed.
pub const DEMO_SEED: u64 = 1;
/// Where `demo` writes its files.
pub const DEMO_DIR: &str = "kks-demo";

/// What `prepare` did.
pub struct Prepared {
    /// True when this run seeded (false: the database had families).
    pub seeded: bool,
    /// The directory holding `cards.csv` and `terminals.csv`.
    pub dir: PathBuf,
    /// The two disbursement summaries (PKH, BPNT).
    pub summaries: Vec<Summary>,
}

/// Seed (if empty) and disburse the current periods.
pub async fn prepare(cfg: &Config, programs: &Programs, dir: &Path) -> Result<Prepared, String> {
    let (master, _) = cfg.master_key().map_err(|e| e.to_string())?;
    let url = &cfg.store.db;
    let store = Store::open(url).await.map_err(|e| e.to_string())?;
    let seeded = store.family_count().await.map_err(|e| e.to_string())? == 0;
    if seeded {
        let sc = SeedConfig {
            families: DEMO_FAMILIES,
            seed: DEMO_SEED,
            out: dir.to_path_buf(),
            mac_share: MAC_SHARE_DEFAULT,
            skip_files: false,
        };
        seed::run(url, &store, programs, &master, cfg.shards.clone(), &sc)
            .await
            .map_err(|e| format!("seed: {e}"))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let month = current_month_wib();
    let mut summaries = Vec::new();
    for program in [Program::Pkh, Program::Bpnt] {
        let period = programs.current_period(program, month);
        let dc = DisburseConfig {
            program,
            period: period.to_string(),
            orders: None,
            dry_run: false,
            report: Some(dir.join(format!(
                "disburse-{}-{}-rejects.csv",
                crate::programs::program_name(program),
                period.to_string().replace("..", "_")
            ))),
        };
        let s = disbursement::run(url, &store, programs, cfg.shards.clone(), &dc)
            .await
            .map_err(|e| format!("disburse: {e}"))?;
        summaries.push(s);
    }
    store.close().await;
    Ok(Prepared {
        seeded,
        dir: dir.to_path_buf(),
        summaries,
    })
}

/// The default demo directory, `./kks-demo`.
pub fn default_dir() -> PathBuf {
    PathBuf::from(DEMO_DIR)
}
