//! The local admin endpoint (INTERFACE §8): while `serve` runs, `card`,
//! `sweep` and `disburse` hand their ledger commands to the running shards
//! instead of writing the database beside them, so the shards stay the
//! single writers.
//!
//! `serve` listens on 127.0.0.1 (a free port) and records the address, its
//! process id and a random token in a file beside the database
//! (`<sqlite path>.admin`; for PostgreSQL a file in the temp directory named
//! after the URL's hash), readable only by its owner. The protocol is one
//! JSON line per request, `{"token", "bank", "commands": [...]}`, answered by
//! one JSON line `{"ok", "error", "done": [...]}` once the commands are
//! durable.
//!
//! [`Writer`] is what the commands use: the admin endpoint when a server is
//! running, else the database directly under an exclusive lock file that also
//! stops a server from starting meanwhile.

use crate::ledger::{BankCode, Command, LedgerConfig};
use crate::shard::{Done, ShardConfig, Shards, Unavailable};
use crate::storage::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Largest admin request line (a chunk of commands as JSON).
const ADMIN_LINE_BYTES_MAX: usize = 64 << 20;
/// Commands per admin request; larger runs are split by the client.
pub const ADMIN_COMMANDS_MAX: usize = 4096;

#[derive(Serialize, Deserialize)]
struct Endpoint {
    addr: String,
    token: String,
    pid: u32,
}

#[derive(Serialize, Deserialize)]
struct AdminRequest {
    token: String,
    bank: u16,
    commands: Vec<Command>,
}

#[derive(Serialize, Deserialize)]
struct AdminResponse {
    ok: bool,
    error: Option<String>,
    done: Vec<Done>,
}

/// Where the endpoint of a server on `db_url` is recorded.
pub fn endpoint_file(db_url: &str) -> PathBuf {
    if let Some(path) = sqlite_path(db_url) {
        return PathBuf::from(format!("{path}.admin"));
    }
    let h = Sha256::digest(db_url.as_bytes());
    std::env::temp_dir().join(format!("kks-switch-{}.admin", hex::encode(&h[..8])))
}

/// The lock file of direct (serverless) writers on `db_url`.
pub fn lock_file(db_url: &str) -> PathBuf {
    let mut p = endpoint_file(db_url);
    p.set_extension("lock");
    p
}

fn sqlite_path(db_url: &str) -> Option<String> {
    let rest = db_url
        .strip_prefix("sqlite://")
        .or_else(|| db_url.strip_prefix("sqlite:"))?;
    Some(rest.split('?').next().unwrap_or(rest).to_string())
}

fn random_token() -> String {
    let mut buf = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut buf);
    }
    let mut h = Sha256::new();
    h.update(buf);
    h.update(std::process::id().to_le_bytes());
    h.update(format!("{:?}", std::time::SystemTime::now()).as_bytes());
    hex::encode(&h.finalize()[..16])
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn write_private(path: &PathBuf, body: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(body)
}

/// A running admin endpoint; dropping it removes its file.
pub struct AdminServer {
    file: PathBuf,
    stop: CancellationToken,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Refuse to start a server while a direct writer holds the lock.
pub fn check_not_locked(db_url: &str) -> Result<(), String> {
    let lock = lock_file(db_url);
    if let Ok(text) = std::fs::read_to_string(&lock) {
        if let Ok(pid) = text.trim().parse::<u32>() {
            if process_alive(pid) && pid != std::process::id() {
                return Err(format!(
                    "the database is locked by a direct writer (pid {pid}, {}); try again when it finishes",
                    lock.display()
                ));
            }
        }
    }
    Ok(())
}

/// Open the admin endpoint for `shards`.
pub async fn start(shards: Arc<Shards>, db_url: &str) -> std::io::Result<AdminServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let token = random_token();
    let file = endpoint_file(db_url);
    let body = serde_json::to_vec(&Endpoint {
        addr: addr.to_string(),
        token: token.clone(),
        pid: std::process::id(),
    })
    .map_err(std::io::Error::other)?;
    write_private(&file, &body)?;
    let stop = CancellationToken::new();
    let stop2 = stop.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop2.cancelled() => break,
                r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            };
            let shards = shards.clone();
            let token = token.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_admin(stream, shards, &token).await {
                    tracing::warn!(error = %e, "admin connection failed");
                }
            });
        }
    });
    tracing::info!(%addr, file = %endpoint_file(db_url).display(), "admin endpoint open");
    Ok(AdminServer { file, stop })
}

async fn serve_admin(stream: TcpStream, shards: Arc<Shards>, token: &str) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut rd)
            .take(ADMIN_LINE_BYTES_MAX as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        let resp = match serde_json::from_slice::<AdminRequest>(&line) {
            Err(e) => AdminResponse {
                ok: false,
                error: Some(format!("bad request: {e}")),
                done: vec![],
            },
            Ok(req) if !bool::from(req.token.as_bytes().ct_eq(token.as_bytes())) => AdminResponse {
                ok: false,
                error: Some("bad token".into()),
                done: vec![],
            },
            Ok(req) if req.commands.len() > ADMIN_COMMANDS_MAX => AdminResponse {
                ok: false,
                error: Some(format!("more than {ADMIN_COMMANDS_MAX} commands")),
                done: vec![],
            },
            Ok(req) => match shards
                .execute_many(BankCode(req.bank), req.commands, 4)
                .await
            {
                Ok(done) => AdminResponse {
                    ok: true,
                    error: None,
                    done,
                },
                Err(Unavailable) => AdminResponse {
                    ok: false,
                    error: Some("issuer unavailable".into()),
                    done: vec![],
                },
            },
        };
        let mut out = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
        out.push(b'\n');
        wr.write_all(&out).await?;
    }
}

use tokio::io::AsyncReadExt as _;

/// Why a writer could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("{0}")]
    Locked(String),
    #[error("store: {0}")]
    Store(#[from] crate::storage::StoreError),
    #[error("ledger: {0}")]
    Shard(#[from] crate::shard::ShardError),
    #[error("admin endpoint: {0}")]
    Admin(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the command line's ledger commands go.
pub enum Writer {
    /// A running server's shards, through its admin endpoint.
    Remote { addr: String, token: String },
    /// This process's own shards, holding the direct-writer lock.
    Direct {
        shards: Arc<Shards>,
        store: Store,
        lock: PathBuf,
    },
}

impl Writer {
    /// The running server's endpoint if there is one, else direct access
    /// under the lock file.
    pub async fn open(
        db_url: &str,
        configs: Vec<LedgerConfig>,
        shard_cfg: ShardConfig,
    ) -> Result<Writer, WriterError> {
        if let Ok(text) = std::fs::read(endpoint_file(db_url)) {
            if let Ok(ep) = serde_json::from_slice::<Endpoint>(&text) {
                if process_alive(ep.pid) && TcpStream::connect(&ep.addr).await.is_ok() {
                    return Ok(Writer::Remote {
                        addr: ep.addr,
                        token: ep.token,
                    });
                }
            }
        }
        let lock = lock_file(db_url);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        match opts.open(&lock) {
            Ok(mut f) => {
                let _ = write!(f, "{}", std::process::id());
            }
            Err(_) => {
                let holder = std::fs::read_to_string(&lock)
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok());
                match holder {
                    Some(pid) if process_alive(pid) => {
                        return Err(WriterError::Locked(format!(
                            "another writer (pid {pid}) holds {}",
                            lock.display()
                        )))
                    }
                    // A stale lock from a process that died: take it over.
                    _ => std::fs::write(&lock, std::process::id().to_string())?,
                }
            }
        }
        let opened = async {
            let store = Store::open(db_url).await?;
            let shards = Shards::start(store.clone(), configs, shard_cfg).await?;
            Ok::<_, WriterError>((store, shards))
        }
        .await;
        match opened {
            Ok((store, shards)) => Ok(Writer::Direct {
                shards: Arc::new(shards),
                store,
                lock,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&lock);
                Err(e)
            }
        }
    }

    /// True when the work goes to a running server.
    pub fn is_remote(&self) -> bool {
        matches!(self, Writer::Remote { .. })
    }

    /// Execute commands for one bank, durably, answers in order.
    pub async fn execute_many(
        &self,
        bank: BankCode,
        cmds: Vec<Command>,
    ) -> Result<Vec<Done>, WriterError> {
        match self {
            Writer::Direct { shards, .. } => shards
                .execute_many(bank, cmds, 4)
                .await
                .map_err(|_| WriterError::Admin("issuer unavailable".into())),
            Writer::Remote { addr, token } => {
                let stream = TcpStream::connect(addr).await?;
                let (rd, mut wr) = stream.into_split();
                let mut rd = BufReader::new(rd);
                let mut out = Vec::with_capacity(cmds.len());
                let mut line = Vec::new();
                for chunk in cmds.chunks(ADMIN_COMMANDS_MAX) {
                    let mut req = serde_json::to_vec(&AdminRequest {
                        token: token.clone(),
                        bank: bank.0,
                        commands: chunk.to_vec(),
                    })
                    .map_err(std::io::Error::other)?;
                    req.push(b'\n');
                    wr.write_all(&req).await?;
                    line.clear();
                    rd.read_until(b'\n', &mut line).await?;
                    let resp: AdminResponse = serde_json::from_slice(&line)
                        .map_err(|e| WriterError::Admin(format!("bad response: {e}")))?;
                    if !resp.ok {
                        return Err(WriterError::Admin(resp.error.unwrap_or_default()));
                    }
                    out.extend(resp.done);
                }
                Ok(out)
            }
        }
    }

    /// Finish: direct writers drain their shards (final checkpoint), close
    /// the store and release the lock.
    pub async fn close(self) {
        if let Writer::Direct {
            shards,
            store,
            lock,
        } = self
        {
            if let Ok(s) = Arc::try_unwrap(shards) {
                s.shutdown().await;
            }
            store.close().await;
            let _ = std::fs::remove_file(lock);
        }
    }
}
