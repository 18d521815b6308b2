//! One writer per bank, with group commit (DESIGN §2).
//!
//! Each bank's [`Ledger`] is owned by one shard task. Requests reach it
//! through a bounded queue; the shard takes what has queued (up to
//! `batch_size_max`), applies it as one batch, and hands the batch's journal
//! record to the committer. The committer makes every batch that has queued
//! for it, from every shard, durable in one database transaction and only
//! then completes the batch's replies. So an answer that a terminal sees is
//! on disk, and the cost of a commit is shared by every request in it.
//!
//! Shards do not wait for their commit before applying the next batch: the
//! committer is strictly ordered, so if a commit fails, that batch and every
//! later batch of the same shard are answered "unavailable" (91) and the
//! shard rebuilds its ledger from the store (checkpoint + replay) before it
//! takes more work. Nothing a terminal was told is lost; nothing it was not
//! told is half-applied (a batch is one transaction).

use crate::ledger::{
    BankCode, BodyPieces, BodyReader, Code, Command, Effects, Ledger, LedgerConfig, Reply,
    SweepLine,
};
use crate::storage::{Checkpoint, JournalBatch, PostingRow, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How often (ledger seconds) a shard drops idempotency keys older than
/// the retention (`key_retention_days`, default 30).
///
/// Why every second rather than every hour: expiry runs inside a batch, and
/// at 50k requests/s an hour's keys are 180M records whose removal would
/// hold a bank for seconds; a second's are a few milliseconds' work, and
/// the command adds one small journal entry per bank per second.
const KEY_EXPIRY_INTERVAL_SECONDS: u64 = 1;

/// Limits of the shard and commit pipeline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShardConfig {
    /// Most commands applied (and committed) as one batch by a shard.
    pub batch_size_max: usize,
    /// Requests waiting per bank; beyond it submitters wait (backpressure).
    pub queue_depth_max: usize,
    /// How long a request may wait for queue space before it is answered 91.
    pub queue_timeout_ms: u64,
    /// Batches between checkpoints of a bank's ledger (also on shutdown).
    pub checkpoint_every_batches: u64,
    /// Commands between checkpoints: bounds what start-up replays. A bank
    /// whose state (accounts and idempotency keys) had more records than
    /// this at its last checkpoint waits for that many commands instead, so
    /// a checkpoint costs about two records written per command since the
    /// last.
    pub checkpoint_every_commands: u64,
    /// Batches the committer may hold before shards wait on it.
    pub commit_queue_max: usize,
    /// Checkpoint bytes written per transaction: the committer writes a
    /// checkpoint in pieces of this size between group commits, so commits
    /// wait for one piece at a time rather than the whole checkpoint. The
    /// final checkpoint at shutdown and the first one of a bank are also
    /// encoded a piece of this size at a time, so they hold about two
    /// pieces rather than the whole body.
    pub checkpoint_chunk_bytes: usize,
    /// Least time between two pieces of a periodic checkpoint (0: one
    /// piece per group commit round). A piece is a transaction of
    /// `checkpoint_chunk_bytes` that the group commits of every bank wait
    /// behind, so pieces written back to back made every request of those
    /// seconds wait for them; spaced, a few commit rounds in a hundred do.
    /// The default (1 MiB every 10 ms) writes 100 MB/s.
    pub checkpoint_piece_interval_ms: u64,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            batch_size_max: 1024,
            queue_depth_max: 65_536,
            queue_timeout_ms: 1_000,
            checkpoint_every_batches: 1_000_000,
            checkpoint_every_commands: 1_000_000,
            commit_queue_max: 64,
            checkpoint_chunk_bytes: 1 << 20,
            checkpoint_piece_interval_ms: 10,
        }
    }
}

/// A command's durable result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// What the ledger answered (code, approval, balances).
    pub reply: Reply,
    /// True when answered from the idempotency store (a retransmission).
    pub replayed: bool,
    /// Sweep report lines, for sweep commands.
    pub sweep: Vec<SweepLine>,
}

/// The bank's shard or its store cannot take the request (DE39 91).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("issuer unavailable")]
pub struct Unavailable;

/// What a submitter of one command waits on.
pub type Ticket = oneshot::Receiver<Result<Done, Unavailable>>;
/// What a submitter of a run of commands waits on.
pub type ManyTicket = oneshot::Receiver<Result<Vec<Done>, Unavailable>>;

/// Where the answer to one wire request goes, without a task waiting for it
/// ([`Shards::submit_to`]).
///
/// The bank's task calls [`Respond::prepare`] with the ledger's answer as
/// soon as the batch is applied, so the response is encoded (and MAC'd)
/// while the commit before it is still being written; the committer then
/// calls [`Respond::complete`] once the batch is durable, or failed, and
/// that only hands over the prepared bytes. So a durable answer reaches the
/// connection's writer straight from the committer: no task per request is
/// woken to build it after the commit.
pub trait Respond: Send + 'static {
    /// The ledger's answer, not yet durable. Called at most once, before
    /// [`Respond::complete`].
    fn prepare(&mut self, done: &Done);
    /// `durable` is true once the answer prepared is on disk: send it.
    /// False when the request's batch was not made durable (or never
    /// reached the ledger): answer "unavailable" (91) instead.
    fn complete(self: Box<Self>, durable: bool);
}

/// What a caller queued: one request awaited on a ticket, one wire request
/// answered through its [`Respond`], or a run of commands answered together
/// (disbursement waves, seeding, benches).
enum Job {
    One(Command, oneshot::Sender<Result<Done, Unavailable>>),
    Wire(Command, Box<dyn Respond>),
    Many(
        Vec<Command>,
        oneshot::Sender<Result<Vec<Done>, Unavailable>>,
    ),
}

impl Job {
    fn len(&self) -> usize {
        match self {
            Job::One(..) | Job::Wire(..) => 1,
            Job::Many(c, _) => c.len(),
        }
    }

    fn fail(self) {
        match self {
            Job::One(_, tx) => {
                let _ = tx.send(Err(Unavailable));
            }
            Job::Wire(_, r) => r.complete(false),
            Job::Many(_, tx) => {
                let _ = tx.send(Err(Unavailable));
            }
        }
    }
}

/// Where a batch's outcomes go once durable.
enum Waiter {
    One(oneshot::Sender<Result<Done, Unavailable>>, Option<Done>),
    /// Prepared already if the ledger answered.
    Wire(Box<dyn Respond>),
    Many(oneshot::Sender<Result<Vec<Done>, Unavailable>>, Vec<Done>),
}

impl Waiter {
    fn complete(self, ok: bool) {
        match self {
            Waiter::One(tx, d) => {
                let _ = tx.send(d.filter(|_| ok).ok_or(Unavailable));
            }
            Waiter::Wire(r) => r.complete(ok),
            Waiter::Many(tx, d) => {
                let _ = tx.send(if ok { Ok(d) } else { Err(Unavailable) });
            }
        }
    }
}

enum CommitItem {
    Batch {
        bank: u16,
        generation: u64,
        record: JournalBatch,
        replies: Vec<Waiter>,
    },
    Checkpoint {
        bank: u16,
        generation: u64,
        checkpoint: Checkpoint,
    },
    /// Completes once everything queued before it is durable.
    Barrier(oneshot::Sender<()>),
}

/// Failures starting the shards.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("bank {bank}: stored journal cannot be read: {reason}")]
    Corrupt { bank: u16, reason: String },
    #[error("store changed while it was read: {0}")]
    Changing(String),
}

/// Encode a batch's commands for the journal.
pub fn encode_commands(cmds: &[Command]) -> Vec<u8> {
    postcard::to_stdvec(cmds).unwrap_or_default()
}

/// Decode a journaled batch.
pub fn decode_commands(bytes: &[u8]) -> Result<Vec<Command>, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// Rebuild one bank's ledger from the store: its checkpoint (or an empty
/// ledger), then every journaled batch after it, applied with its own
/// timestamp. Returns the ledger and the number of batches replayed.
pub async fn recover(store: &Store, config: LedgerConfig) -> Result<(Ledger, u64), ShardError> {
    let bank = config.bank.0;
    let corrupt = |e: crate::ledger::BodyError| ShardError::Corrupt {
        bank,
        reason: e.to_string(),
    };
    // The checkpoint is decoded as its pieces arrive, so what is held
    // besides the ledger being built is a piece, not the body. Journaled
    // batches are replayed under the rules they were applied with (the
    // checkpoint's); today's configuration applies after. The bank is the
    // one asked for.
    let mut reader: Option<BodyReader> = None;
    let head = store
        .read_checkpoint(bank, |head, piece| {
            reader
                .get_or_insert_with(|| BodyReader::new(head.len).for_bank(config.bank))
                .feed(piece)
                .map_err(corrupt)
        })
        .await?;
    let mut ledger = match head {
        Some(head) => reader
            .unwrap_or_else(|| BodyReader::new(head.len).for_bank(config.bank))
            .finish()
            .map_err(corrupt)?,
        None => Ledger::new(config),
    };
    let mut effects = Effects::with_capacity(1024);
    let mut replayed = 0u64;
    loop {
        // Batches are numbered from 1; `batches` counts those applied.
        let next = ledger.counters().batches + 1;
        let page = store.batches_from(bank, next, 512).await?;
        if page.is_empty() {
            break;
        }
        for b in page {
            if b.batch != ledger.counters().batches + 1 {
                return Err(ShardError::Corrupt {
                    bank,
                    reason: format!(
                        "journal gap: expected batch {}, found {}",
                        ledger.counters().batches + 1,
                        b.batch
                    ),
                });
            }
            let cmds = decode_commands(&b.commands).map_err(|e| ShardError::Corrupt {
                bank,
                reason: format!("batch {}: {e}", b.batch),
            })?;
            effects.clear();
            ledger.apply(&cmds, b.ts, &mut effects);
            replayed += 1;
        }
    }
    ledger.set_config(config);
    Ok((ledger, replayed))
}

/// Banks that recover from the store at once (see `Shards::start`): the
/// project machine's cores, and half the store's pool.
const RECOVER_AT_ONCE: usize = 2;

/// The running shards of all banks and their committer.
pub struct Shards {
    queues: HashMap<u16, mpsc::Sender<Job>>,
    commit: mpsc::Sender<CommitItem>,
    cfg: ShardConfig,
    tasks: Vec<JoinHandle<()>>,
    committer: Option<JoinHandle<()>>,
}

/// Per-bank generation numbers: the committer raises one after a failed
/// commit; the shard then rebuilds before applying more.
type Generations = Arc<HashMap<u16, AtomicU64>>;

impl Shards {
    /// Recover every bank's ledger from the store and start its shard and
    /// the shared committer. `configs` has one entry per bank.
    pub async fn start(
        store: Store,
        configs: Vec<LedgerConfig>,
        cfg: ShardConfig,
    ) -> Result<Shards, ShardError> {
        let generations: Generations = Arc::new(
            configs
                .iter()
                .map(|c| (c.bank.0, AtomicU64::new(0)))
                .collect(),
        );
        let (commit_tx, commit_rx) = mpsc::channel(cfg.commit_queue_max.max(1));
        let finals = Arc::new(tokio::sync::Semaphore::new(1));
        let committer = tokio::spawn(committer(
            store.clone(),
            commit_rx,
            generations.clone(),
            cfg.checkpoint_chunk_bytes,
            Duration::from_millis(cfg.checkpoint_piece_interval_ms),
        ));
        let mut queues = HashMap::new();
        let mut tasks = Vec::new();
        // Banks recover in parallel, each independent, but at most
        // `RECOVER_AT_ONCE` at a time: a recovering bank holds a store
        // connection while it decodes its checkpoint piece by piece (one read
        // transaction, so the pieces are of one checkpoint), and the pool
        // must keep connections for the rest (the WAL copier, other banks).
        let at_once = Arc::new(tokio::sync::Semaphore::new(RECOVER_AT_ONCE));
        let handles: Vec<_> = configs
            .into_iter()
            .map(|config| {
                let store = store.clone();
                let at_once = at_once.clone();
                tokio::spawn(async move {
                    let _turn = at_once.acquire_owned().await.ok();
                    let started = Instant::now();
                    let r = recover(&store, config).await;
                    (config, r, started.elapsed())
                })
            })
            .collect();
        let mut recovered = Vec::with_capacity(handles.len());
        for h in handles {
            match h.await {
                Ok(x) => recovered.push(x),
                Err(e) => {
                    return Err(ShardError::Corrupt {
                        bank: 0,
                        reason: format!("recovery task failed: {e}"),
                    })
                }
            }
        }
        for (config, r, took) in recovered {
            let bank = config.bank.0;
            let (ledger, replayed) = r?;
            // A journal always starts behind a checkpoint, which records the
            // rules its batches are applied with (see `recover`).
            // It is written piece by piece: a ledger rebuilt from the
            // journal alone may be large.
            let ledger = if store.has_checkpoint(bank).await? {
                ledger
            } else {
                write_checkpoint(&store, ledger, 0, cfg.checkpoint_chunk_bytes).await?
            };
            tracing::info!(
                bank,
                replayed,
                ms = took.as_millis() as u64,
                "ledger recovered"
            );
            let (tx, rx) = mpsc::channel(cfg.queue_depth_max.max(1));
            queues.insert(bank, tx);
            let records_at_checkpoint = state_records(&ledger);
            let shard = Shard {
                bank,
                config,
                ledger: Some(ledger),
                store: store.clone(),
                rx,
                commit: commit_tx.clone(),
                cfg: cfg.clone(),
                generations: generations.clone(),
                generation: 0,
                last_ts: 0,
                since_checkpoint: 0,
                commands_since_checkpoint: 0,
                records_at_checkpoint,
                next_key_expiry: 0,
                finals: finals.clone(),
                encoding: Vec::new(),
            };
            tasks.push(tokio::spawn(shard.run()));
        }
        Ok(Shards {
            queues,
            commit: commit_tx,
            cfg,
            tasks,
            committer: Some(committer),
        })
    }

    /// Queue a command to its bank's shard, waiting up to `queue_timeout_ms`
    /// for space. Call in arrival order: commands of one caller take effect
    /// in the order their `submit` calls completed.
    pub async fn submit(&self, bank: BankCode, cmd: Command) -> Result<Ticket, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(bank, Job::One(cmd, tx)).await?;
        Ok(rx)
    }

    /// Queue a wire request whose answer goes to `respond` once durable
    /// (or as 91 if the bank cannot take it or the commit fails). Waits,
    /// like [`Shards::submit`], only for queue space.
    pub async fn submit_to(&self, bank: BankCode, cmd: Command, respond: Box<dyn Respond>) {
        if let Err(job) = self.enqueue_job(bank, Job::Wire(cmd, respond)).await {
            job.fail();
        }
    }

    /// Queue a run of commands (at most `batch_size_max`; longer runs are
    /// split by [`Shards::execute_many`]) answered together once durable.
    pub async fn submit_many(
        &self,
        bank: BankCode,
        cmds: Vec<Command>,
    ) -> Result<ManyTicket, Unavailable> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(bank, Job::Many(cmds, tx)).await?;
        Ok(rx)
    }

    /// Execute a run of commands in order, in chunks of `batch_size_max`,
    /// keeping up to `window` chunks in flight. Outcomes in command order.
    pub async fn execute_many(
        &self,
        bank: BankCode,
        cmds: Vec<Command>,
        window: usize,
    ) -> Result<Vec<Done>, Unavailable> {
        let mut out = Vec::with_capacity(cmds.len());
        let mut pending = std::collections::VecDeque::new();
        let mut it = cmds.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<Command> = it.by_ref().take(self.cfg.batch_size_max.max(1)).collect();
            pending.push_back(self.submit_many(bank, chunk).await?);
            if pending.len() >= window.max(1) {
                if let Some(t) = pending.pop_front() {
                    out.extend(t.await.unwrap_or(Err(Unavailable))?);
                }
            }
        }
        while let Some(t) = pending.pop_front() {
            out.extend(t.await.unwrap_or(Err(Unavailable))?);
        }
        Ok(out)
    }

    async fn enqueue(&self, bank: BankCode, job: Job) -> Result<(), Unavailable> {
        self.enqueue_job(bank, job).await.map_err(|_| Unavailable)
    }

    /// Queue `job`, or hand it back when the bank cannot take it.
    async fn enqueue_job(&self, bank: BankCode, job: Job) -> Result<(), Job> {
        let Some(q) = self.queues.get(&bank.0) else {
            return Err(job);
        };
        let timeout = Duration::from_millis(self.cfg.queue_timeout_ms);
        match q.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(job)) => {
                q.send_timeout(job, timeout).await.map_err(|e| match e {
                    mpsc::error::SendTimeoutError::Timeout(j)
                    | mpsc::error::SendTimeoutError::Closed(j) => j,
                })
            }
            Err(mpsc::error::TrySendError::Closed(job)) => Err(job),
        }
    }

    /// Submit and wait for the durable result.
    pub async fn execute(&self, bank: BankCode, cmd: Command) -> Result<Done, Unavailable> {
        let ticket = self.submit(bank, cmd).await?;
        ticket.await.unwrap_or(Err(Unavailable))
    }

    /// Banks served.
    pub fn banks(&self) -> Vec<u16> {
        let mut b: Vec<u16> = self.queues.keys().copied().collect();
        b.sort_unstable();
        b
    }

    /// Stop taking work, let every shard finish its queue and write a final
    /// checkpoint, and wait until all of it is durable.
    pub async fn shutdown(mut self) {
        self.queues.clear();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        let (tx, rx) = oneshot::channel();
        if self.commit.send(CommitItem::Barrier(tx)).await.is_ok() {
            let _ = rx.await;
        }
        drop(self.commit);
        if let Some(c) = self.committer.take() {
            let _ = c.await;
        }
    }
}

enum JobReply {
    One(oneshot::Sender<Result<Done, Unavailable>>),
    Wire(Box<dyn Respond>),
    Many(oneshot::Sender<Result<Vec<Done>, Unavailable>>),
}

struct Shard {
    bank: u16,
    config: LedgerConfig,
    ledger: Option<Ledger>,
    store: Store,
    rx: mpsc::Receiver<Job>,
    commit: mpsc::Sender<CommitItem>,
    cfg: ShardConfig,
    generations: Generations,
    generation: u64,
    last_ts: u64,
    since_checkpoint: u64,
    commands_since_checkpoint: u64,
    /// The state's size (see [`state_records`]) at the last checkpoint, or
    /// at start-up.
    records_at_checkpoint: u64,
    next_key_expiry: u64,
    /// One permit, shared by all banks: a final (shutdown) checkpoint is
    /// written only while holding it, so banks write theirs one after
    /// another rather than all competing for the database at once.
    finals: Arc<tokio::sync::Semaphore>,
    /// Periodic checkpoints still being encoded (each then queues itself
    /// to the committer): the final checkpoint waits for them, so none can
    /// reach the committer after it.
    encoding: Vec<JoinHandle<()>>,
}

/// Records a checkpoint of `ledger` writes, roughly: accounts (two per
/// card) and idempotency keys.
fn state_records(ledger: &Ledger) -> u64 {
    ledger.account_count() as u64 + ledger.keys_len() as u64
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Shard {
    async fn run(mut self) {
        let mut jobs: Vec<Job> = Vec::with_capacity(self.cfg.batch_size_max);
        let mut cmds: Vec<Command> = Vec::with_capacity(self.cfg.batch_size_max);
        let mut effects = Effects::with_capacity(self.cfg.batch_size_max);
        // A job taken from the queue that did not fit the previous batch.
        let mut carry: Option<Job> = None;
        loop {
            jobs.extend(carry.take());
            let mut size: usize = jobs.iter().map(Job::len).sum();
            if jobs.is_empty() {
                match self.rx.recv().await {
                    Some(j) => {
                        size = j.len();
                        jobs.push(j);
                    }
                    None => break,
                }
                // Woken by one request: let the connections that are
                // ready to run queue theirs first, so the batch (and the
                // journal row it becomes) holds what arrived meanwhile
                // rather than that one command; every batch costs a
                // journal row and its own bookkeeping.
                tokio::task::yield_now().await;
            }
            while size < self.cfg.batch_size_max {
                match self.rx.try_recv() {
                    Ok(j) if size + j.len() > self.cfg.batch_size_max => {
                        carry = Some(j);
                        break;
                    }
                    Ok(j) => {
                        size += j.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            // A failed commit raised our generation: rebuild from the store.
            let wanted = self
                .generations
                .get(&self.bank)
                .map_or(0, |g| g.load(Ordering::Acquire));
            if wanted != self.generation || self.ledger.is_none() {
                self.ledger = None;
                match recover(&self.store, self.config).await {
                    Ok((l, replayed)) => {
                        tracing::warn!(
                            bank = self.bank,
                            replayed,
                            "ledger rebuilt from the store after a failed commit"
                        );
                        self.ledger = Some(l);
                        self.generation = wanted;
                    }
                    Err(e) => {
                        tracing::error!(bank = self.bank, error = %e, "store unavailable; answering 91");
                        jobs.drain(..).for_each(Job::fail);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let Some(ledger) = self.ledger.as_mut() else {
                continue;
            };
            let ts = unix_now().max(self.last_ts);
            self.last_ts = ts;
            cmds.clear();
            let mut shapes = Vec::with_capacity(jobs.len());
            for j in jobs.drain(..) {
                match j {
                    Job::One(c, tx) => {
                        cmds.push(c);
                        shapes.push((1usize, JobReply::One(tx)));
                    }
                    Job::Wire(c, r) => {
                        cmds.push(c);
                        shapes.push((1usize, JobReply::Wire(r)));
                    }
                    Job::Many(cs, tx) => {
                        shapes.push((cs.len(), JobReply::Many(tx)));
                        cmds.extend(cs);
                    }
                }
            }
            // Idempotency keys past retention are dropped once a second of
            // ledger time, as a journaled command so replay does the same.
            if ts >= self.next_key_expiry {
                cmds.push(Command::ExpireKeys {
                    before: self.config.limits.key_expiry_cutoff(ts),
                });
                self.next_key_expiry = ts + KEY_EXPIRY_INTERVAL_SECONDS;
            }
            effects.clear();
            ledger.apply(&cmds, ts, &mut effects);
            let record = JournalBatch {
                bank: self.bank,
                batch: effects.batch,
                ts,
                commands: encode_commands(&cmds),
                postings: effects
                    .postings
                    .iter()
                    .map(|p| PostingRow {
                        id: p.id,
                        cmd: p.command,
                        debit: p.debit.0 as u64,
                        credit: p.credit.0 as u64,
                        amount: p.amount,
                        kind: p.kind as i16,
                    })
                    .collect(),
            };
            let done_of = |o: &crate::ledger::Outcome| {
                let sweep = effects.sweep
                    [o.sweep.start as usize..(o.sweep.start + o.sweep.len) as usize]
                    .to_vec();
                Done {
                    reply: o.reply,
                    replayed: o.replayed,
                    sweep,
                }
            };
            let mut outcomes = effects.outcomes.iter();
            let replies = shapes
                .into_iter()
                .map(|(n, r)| match r {
                    JobReply::One(tx) => Waiter::One(tx, outcomes.next().map(done_of)),
                    JobReply::Wire(mut r) => {
                        if let Some(d) = outcomes.next().map(done_of) {
                            r.prepare(&d);
                        }
                        Waiter::Wire(r)
                    }
                    JobReply::Many(tx) => {
                        Waiter::Many(tx, outcomes.by_ref().take(n).map(done_of).collect())
                    }
                })
                .collect();
            let item = CommitItem::Batch {
                bank: self.bank,
                generation: self.generation,
                record,
                replies,
            };
            if self.commit.send(item).await.is_err() {
                break;
            }
            self.since_checkpoint += 1;
            self.commands_since_checkpoint += cmds.len() as u64;
            // A checkpoint writes the whole state, so one every N commands
            // costs (state ÷ N) per command, which grows without bound with
            // the bank. Waiting for at least as many commands as the last
            // checkpoint had records keeps that cost to about two records
            // written per command (the state can only have grown by one key
            // per command since), and replay after a crash then costs about
            // what loading that checkpoint did. The size is the last
            // checkpoint's, not today's: today's grows with every keyed
            // command and would never be caught up with.
            if self.since_checkpoint >= self.cfg.checkpoint_every_batches
                || self.commands_since_checkpoint
                    >= self
                        .cfg
                        .checkpoint_every_commands
                        .max(self.records_at_checkpoint)
            {
                self.checkpoint(false).await;
            }
        }
        self.checkpoint(true).await;
    }

    /// Checkpoint the ledger. The snapshot is taken here (so it is exactly
    /// the state after the batches sent so far); encoding it, the slow part,
    /// runs on the blocking pool, and the committer writes it behind the
    /// batches it covers, so it never runs ahead of the journal. The final
    /// checkpoint, at shutdown, is [`Shard::final_checkpoint`].
    async fn checkpoint(&mut self, last: bool) {
        if last {
            self.final_checkpoint().await;
            return;
        }
        let Some(ledger) = self.ledger.as_ref() else {
            return;
        };
        let batch = ledger.counters().batches;
        let (bank, generation, ts) = (self.bank, self.generation, self.last_ts);
        let commit = self.commit.clone();
        // Accounts and cards are copied here; key records are shared.
        let taken = Instant::now();
        let snap = ledger.snapshot_image();
        let copy_ms = taken.elapsed().as_millis() as u64;
        self.encoding.retain(|h| !h.is_finished());
        self.encoding.push(tokio::spawn(async move {
            match encode_in_background(move || postcard::to_stdvec(&snap)).await {
                Some(Ok(body)) => {
                    tracing::info!(
                        bank,
                        batch,
                        copy_ms,
                        encode_ms = taken.elapsed().as_millis() as u64 - copy_ms,
                        bytes = body.len(),
                        "checkpoint encoded; the committer writes it behind its batches"
                    );
                    let checkpoint = Checkpoint { batch, ts, body };
                    let _ = commit
                        .send(CommitItem::Checkpoint {
                            bank,
                            generation,
                            checkpoint,
                        })
                        .await;
                }
                Some(Err(e)) => tracing::error!(bank, error = %e, "checkpoint encoding failed"),
                None => tracing::error!(bank, "checkpoint encoding thread failed"),
            }
        }));
        self.since_checkpoint = 0;
        self.commands_since_checkpoint = 0;
        self.records_at_checkpoint = state_records(ledger);
    }

    /// The checkpoint at shutdown, written piece by piece by this task
    /// ([`write_checkpoint`]) rather than encoded whole for the committer:
    /// nothing changes the ledger any more, so it is encoded in place, one
    /// piece at a time, and at most two pieces are held.
    ///
    /// Ordering: it waits for this bank's periodic checkpoints to reach the
    /// committer, then for a barrier, so every batch it covers is durable
    /// and no checkpoint of this bank is being written by the committer
    /// while its pieces are (the committer drops a bank's other pieces when
    /// it commits one). If a commit failed meanwhile (the generation moved
    /// on) the ledger holds batches the store does not, and nothing is
    /// written; nor when the stored checkpoint is already at this batch,
    /// since rewriting its pieces in place could leave a half-old body
    /// behind a crash. Crash-safe as every chunked checkpoint: it becomes
    /// the bank's only when its header row is committed after all pieces.
    async fn final_checkpoint(&mut self) {
        let Some(ledger) = self.ledger.take() else {
            return;
        };
        let bank = self.bank;
        for h in self.encoding.drain(..) {
            let _ = h.await;
        }
        let _permit = self.finals.clone().acquire_owned().await.ok();
        let (tx, rx) = oneshot::channel();
        if self.commit.send(CommitItem::Barrier(tx)).await.is_err() || rx.await.is_err() {
            tracing::warn!(
                bank,
                "final checkpoint not written: the committer has stopped"
            );
            return;
        }
        let current = self
            .generations
            .get(&bank)
            .map_or(0, |g| g.load(Ordering::Acquire));
        if current != self.generation {
            tracing::warn!(bank, "final checkpoint not written: a commit failed");
            return;
        }
        match self.store.checkpoint_batch(bank).await {
            Ok(Some(b)) if b == ledger.counters().batches => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(bank, error = %e, "final checkpoint not written; the journal still holds everything");
                return;
            }
        }
        let (ts, piece_bytes) = (self.last_ts, self.cfg.checkpoint_chunk_bytes);
        if let Err(e) = write_checkpoint(&self.store, ledger, ts, piece_bytes).await {
            tracing::warn!(bank, error = %e, "final checkpoint not written; the journal still holds everything");
        }
    }
}

/// Writes `ledger`'s checkpoint (at its batch count, with timestamp `ts`)
/// in pieces of `piece_bytes`, each its own transaction, then commits the
/// header that makes it the bank's checkpoint; returns the ledger.
///
/// Why this way: the body of a bank of millions of cards is about a
/// gigabyte, and encoding it whole held all of it at once. Here a blocking
/// task encodes the next piece ([`BodyPieces`]) while this task writes the
/// last one; two piece buffers go back and forth between them, so at most
/// two pieces exist. The caller must make sure nothing else writes this
/// bank's checkpoint meanwhile (see [`Shard::final_checkpoint`]).
async fn write_checkpoint(
    store: &Store,
    ledger: Ledger,
    ts: u64,
    piece_bytes: usize,
) -> Result<Ledger, ShardError> {
    let bank = ledger.config().bank.0;
    let batch = ledger.counters().batches;
    let piece_bytes = piece_bytes.max(1);
    let failed = |reason: String| ShardError::Corrupt { bank, reason };
    let (full_tx, mut full_rx) = mpsc::channel::<Vec<u8>>(1);
    let (free_tx, mut free_rx) = mpsc::channel::<Vec<u8>>(2);
    for _ in 0..2 {
        let _ = free_tx.try_send(Vec::new());
    }
    let encoder = tokio::task::spawn_blocking(move || {
        let mut encode = || {
            let mut pieces = BodyPieces::new(&ledger);
            // Ends early (without error) if the writer gave up.
            while let Some(mut buf) = free_rx.blocking_recv() {
                if !pieces.next_piece(&mut buf, piece_bytes)? || full_tx.blocking_send(buf).is_err()
                {
                    break;
                }
            }
            Ok::<(), crate::ledger::BodyError>(())
        };
        let encoded = encode();
        (ledger, encoded)
    });
    let written = async {
        let mut seq = 0u32;
        while let Some(buf) = full_rx.recv().await {
            store.save_checkpoint_chunk(bank, batch, seq, &buf).await?;
            seq = seq
                .checked_add(1)
                .ok_or_else(|| failed("checkpoint of more than 2^32 pieces".into()))?;
            let _ = free_tx.send(buf).await;
        }
        Ok::<u32, ShardError>(seq)
    }
    .await;
    // Unblocks the encoder if the writer stopped early.
    drop(full_rx);
    drop(free_tx);
    let (ledger, encoded) = encoder
        .await
        .map_err(|e| failed(format!("checkpoint encoding task: {e}")))?;
    encoded.map_err(|e| failed(e.to_string()))?;
    let chunks = written?;
    if chunks == 0 {
        return Err(failed("empty checkpoint body".into()));
    }
    store
        .commit_chunked_checkpoint(bank, batch, ts, chunks)
        .await?;
    Ok(ledger)
}

/// A checkpoint the committer is writing piece by piece.
struct CheckpointWrite {
    bank: u16,
    generation: u64,
    checkpoint: Checkpoint,
    /// Pieces written so far.
    written: u32,
}

impl CheckpointWrite {
    /// Pieces of `chunk_bytes`; at least one, so an empty body is still a
    /// chunked checkpoint.
    fn chunks(&self, chunk_bytes: usize) -> u32 {
        self.checkpoint.body.len().div_ceil(chunk_bytes).max(1) as u32
    }
}

/// Runs `f` (a checkpoint's encoding, a second or more of CPU for a large
/// bank) on a thread of its own at the lowest scheduling priority, so it
/// takes the CPU time that serving leaves idle rather than delaying
/// requests: on two cores, an encoding at normal priority took a full core
/// from the tasks answering terminals. Raising a thread's nice value needs
/// no privilege; if it fails, the encoding runs at normal priority.
async fn encode_in_background<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("kks-checkpoint".into())
        .spawn(move || {
            lower_this_thread_priority();
            let _ = tx.send(f());
        });
    if spawned.is_err() {
        return None;
    }
    rx.await.ok()
}

/// Nice 19 for the calling thread (Linux: `setpriority` on a thread id
/// applies to that thread only).
fn lower_this_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority only reads its
    // integer arguments.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// The one writer to the journal: makes each group of batches durable in
/// one transaction, then completes their replies. Checkpoints are written
/// behind the batches they cover, one piece of `chunk_bytes`
/// ([`ShardConfig::checkpoint_chunk_bytes`]) per round between group
/// commits and at most one per `piece_interval`, so a checkpoint of hundreds
/// of megabytes delays a few commits by one piece's write at a time instead
/// of holding every bank's commits for the whole body. A barrier completes
/// only once the checkpoints queued before it are written too.
async fn committer(
    store: Store,
    mut rx: mpsc::Receiver<CommitItem>,
    generations: Generations,
    chunk_bytes: usize,
    piece_interval: Duration,
) {
    let chunk_bytes = chunk_bytes.max(1);
    // When the next checkpoint piece may be written.
    let mut piece_due = Instant::now();
    let mut items = Vec::with_capacity(64);
    let mut group: Vec<JournalBatch> = Vec::with_capacity(64);
    let mut writes: std::collections::VecDeque<CheckpointWrite> = Default::default();
    let mut barriers: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closed = false;
    let current = |bank: u16, g: u64| {
        generations
            .get(&bank)
            .map_or(0, |x| x.load(Ordering::Acquire))
            == g
    };
    loop {
        if writes.is_empty() {
            barriers.drain(..).for_each(|tx| {
                let _ = tx.send(());
            });
            if closed || rx.recv_many(&mut items, 64).await == 0 {
                break;
            }
        } else if !closed {
            // Checkpoint pieces are waiting: take what has queued, waiting
            // for more only until the next piece is due.
            let now = Instant::now();
            if now < piece_due {
                let wait = tokio::time::timeout_at(piece_due.into(), rx.recv_many(&mut items, 64));
                // 0: closed and drained. A timeout: the piece is due.
                if let Ok(0) = wait.await {
                    closed = true;
                }
            }
            while items.len() < 64 {
                match rx.try_recv() {
                    Ok(it) => items.push(it),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        group.clear();
        for it in items.iter_mut() {
            if let CommitItem::Batch {
                bank,
                generation,
                record,
                ..
            } = it
            {
                if current(*bank, *generation) {
                    group.push(std::mem::take(record));
                }
            }
        }
        let result = if group.is_empty() {
            Ok(())
        } else {
            store.append(&group).await
        };
        let failed = result.is_err();
        if let Err(e) = &result {
            tracing::error!(error = %e, batches = group.len(), "group commit failed; affected banks answer 91 and rebuild");
        }
        for it in items.drain(..) {
            match it {
                CommitItem::Batch {
                    bank,
                    generation,
                    replies,
                    ..
                } => {
                    let ok = !failed && current(bank, generation);
                    if !ok && current(bank, generation) {
                        if let Some(g) = generations.get(&bank) {
                            g.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    replies.into_iter().for_each(|w| w.complete(ok));
                }
                CommitItem::Checkpoint {
                    bank,
                    generation,
                    checkpoint,
                } => {
                    if !failed && current(bank, generation) {
                        // A newer checkpoint of the bank supersedes one not
                        // finished yet.
                        writes.retain(|w| w.bank != bank || w.written > 0);
                        writes.push_back(CheckpointWrite {
                            bank,
                            generation,
                            checkpoint,
                            written: 0,
                        });
                    }
                }
                CommitItem::Barrier(tx) => barriers.push(tx),
            }
        }
        if let Some(w) = writes.front_mut() {
            if !current(w.bank, w.generation) {
                writes.pop_front();
                continue;
            }
            if !closed && Instant::now() < piece_due {
                continue;
            }
            piece_due = Instant::now() + piece_interval;
            let (bank, batch) = (w.bank, w.checkpoint.batch);
            let chunks = w.chunks(chunk_bytes);
            let result = if w.written < chunks {
                let from = (w.written as usize * chunk_bytes).min(w.checkpoint.body.len());
                let to = (from + chunk_bytes).min(w.checkpoint.body.len());
                let r = store
                    .save_checkpoint_chunk(bank, batch, w.written, &w.checkpoint.body[from..to])
                    .await;
                w.written += 1;
                r.map(|_| false)
            } else {
                store
                    .commit_chunked_checkpoint(bank, batch, w.checkpoint.ts, chunks)
                    .await
                    .map(|_| true)
            };
            match result {
                Ok(false) => {}
                Ok(true) => {
                    writes.pop_front();
                }
                Err(e) => {
                    tracing::warn!(bank, error = %e, "checkpoint not written; the journal still holds everything");
                    writes.pop_front();
                }
            }
        }
    }
    barriers.drain(..).for_each(|tx| {
        let _ = tx.send(());
    });
}

/// The DE39 of a code, re-exported here for callers that only hold a [`Done`].
pub fn approved(done: &Done) -> bool {
    matches!(done.reply.code, Code::Approved)
}
