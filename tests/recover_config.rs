//! Recovery replays journaled batches under the rules they were applied
//! with, and only then switches to today's configuration: a limit lowered
//! between runs must not turn an approval the terminal saw into a decline on
//! replay.

mod common;

use kks_switch::drill::{bank_configs, open_population, test_pan, DRILL_PVV};
use kks_switch::ledger::{
    Acceptor, BankCode, Code, Command, Fingerprint, MerchantId, Payment, Precheck, Program,
    Request, RequestKey, TerminalKind,
};
use kks_switch::pan::Bank;
use kks_switch::shard::{recover, ShardConfig, Shards};
use kks_switch::storage::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_uses_the_rules_in_force_when_applied() {
    let db = common::db::sqlite();
    let store = Store::open(&db.url).await.unwrap();
    let bri = BankCode(Bank::Bri.code_number());
    let shards = Shards::start(store.clone(), bank_configs(), ShardConfig::default())
        .await
        .unwrap();
    // The initial checkpoint, written before any batch, records the rules.
    let initial = store
        .load_checkpoint(bri.0)
        .await
        .unwrap()
        .expect("initial checkpoint");
    open_population(&shards, 5).await.unwrap();
    // Rp700.000: allowed under the default Rp1.000.000 per-withdrawal limit.
    let w = Command::Withdrawal(Payment {
        request: Request {
            key: RequestKey::new(b"recover-config:w1").unwrap(),
            fingerprint: Fingerprint::ZERO,
        },
        wallet: Program::Pkh,
        pan: test_pan(Bank::Bri, 1),
        amount: 70_000_000,
        acceptor: Acceptor {
            kind: TerminalKind::Agent,
            bank: bri,
            merchant: MerchantId::new(b"DRILLAG002").unwrap(),
        },
        pin: Some(DRILL_PVV),
        precheck: Precheck::Passed,
    });
    let done = shards.execute(bri, w).await.unwrap();
    assert_eq!(done.reply.code, Code::Approved);
    let before = done.reply.balances.unwrap();
    shards.shutdown().await;

    // Force a replay of every batch from the initial checkpoint, with the
    // per-withdrawal limit now lowered to Rp500.000.
    store.save_checkpoint(bri.0, &initial).await.unwrap();
    let mut lowered = bank_configs()[0];
    assert_eq!(lowered.bank, bri);
    lowered.limits.withdrawal_amount_max = 50_000_000;
    let (ledger, replayed) = recover(&store, lowered).await.unwrap();
    assert!(replayed > 0, "the journal was replayed");
    assert_eq!(
        ledger.balances(&test_pan(Bank::Bri, 1)).unwrap().pkh,
        before.pkh,
        "the approved withdrawal is still there after replay"
    );
    assert_eq!(ledger.config().limits.withdrawal_amount_max, 50_000_000);
    store.close().await;
}
