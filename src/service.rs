//! The running host, assembled: store → shards (ledger recovered from
//! checkpoint + journal) → terminal registry → ISO 8583 listener. `serve`
//! and `demo` use it, and so do the end-to-end tests.

use crate::auth::Issuer;
use crate::config::Config;
use crate::ledger::LedgerConfig;
use crate::registry::Registry;
use crate::shard::Shards;
use crate::storage::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] crate::storage::StoreError),
    #[error("ledger: {0}")]
    Shard(#[from] crate::shard::ShardError),
    #[error("registry: {0}")]
    Registry(#[from] crate::registry::RegistryError),
    #[error("config: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Locked(String),
    #[error("admin endpoint: {0}")]
    Admin(std::io::Error),
}

/// Ledger configurations of the five banks under this configuration
/// (limits from the program rules, rule set from `[rules]`).
pub fn ledger_configs(cfg: &Config) -> Result<Vec<LedgerConfig>, StartError> {
    Ok(cfg.programs()?.ledger_configs())
}

/// A started host.
pub struct Running {
    /// The bound ISO 8583 address.
    pub addr: SocketAddr,
    /// The shards, for in-process callers (tests, demo).
    pub shards: Arc<Shards>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    store: Store,
    admin: Option<crate::admin::AdminServer>,
}

impl Running {
    /// Ask the host to stop (as SIGTERM does).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Wait until the listener has stopped and in-flight work is answered,
    /// then drain the shards (final checkpoints) and close the store.
    pub async fn wait(self) -> std::io::Result<()> {
        let r = self.server.await.unwrap_or(Ok(()));
        drop(self.admin);
        // The admin endpoint's tasks let go of the shards as they notice
        // the shutdown; give them a moment before draining.
        let mut shards = self.shards;
        let mut drained = false;
        for _ in 0..200 {
            match Arc::try_unwrap(shards) {
                Ok(s) => {
                    s.shutdown().await;
                    drained = true;
                    break;
                }
                Err(still_shared) => {
                    shards = still_shared;
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
            }
        }
        if !drained {
            tracing::warn!("shards still referenced 5 s after shutdown; final checkpoint skipped");
        }
        self.store.close().await;
        r
    }
}

/// Open everything and start listening.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    let (master, test_key) = cfg.master_key()?;
    if test_key {
        tracing::warn!("using the documented TEST master key; set KKS_MASTER_KEY or security.master_key_hex for anything but testing");
    }
    crate::admin::check_not_locked(&cfg.store.db).map_err(StartError::Locked)?;
    let store = Store::open(&cfg.store.db).await?;
    let registry = Registry::load(&store, &master).await?;
    let shards =
        Arc::new(Shards::start(store.clone(), ledger_configs(&cfg)?, cfg.shards.clone()).await?);
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.server.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: cfg.server.listen.clone(),
        source,
    })?;
    tracing::info!(%addr, terminals = registry.len(), rule_set = %cfg.rules.bpnt_rule_set, "serving");
    let issuer = Arc::new(Issuer {
        shards: shards.clone(),
        registry: Arc::new(registry),
        rule_set: cfg.rule_set(),
    });
    let admin = crate::admin::start(shards.clone(), &cfg.store.db)
        .await
        .map_err(StartError::Admin)?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(crate::switch::serve(
        listener,
        cfg.server.clone(),
        issuer,
        shutdown.clone(),
    ));
    Ok(Running {
        addr,
        shards,
        shutdown,
        server,
        store,
        admin: Some(admin),
    })
}
