//! One test per outcome and per rule. Names start with the rule they prove.

use super::*;

// ---- approvals and postings -------------------------------------------------

#[test]
fn credit_moves_money_from_source_to_wallet() {
    let mut w = World::new();
    let o = w.one(credit("PKH:2026-T1:1", Program::Pkh, pan(1), 750_000 * RP));
    assert_eq!(o.code(), Code::Approved);
    assert!(o.reply.approval.is_some());
    assert_eq!(
        o.reply.balances,
        Some(Balances {
            pkh: 750_000 * RP,
            bpnt: 0
        })
    );
    let postings = w.fx.postings_of(&o);
    assert_eq!(postings.len(), 1);
    assert_eq!(postings[0].debit, SOURCE_ACCOUNT);
    assert_eq!(postings[0].kind, PostingKind::Credit);
    assert_eq!(postings[0].command, 0);
    assert_eq!(w.account_balance(SOURCE_ACCOUNT), -(750_000 * RP as i64));
}

#[test]
fn credit_by_family_finds_the_card() {
    let mut w = World::new();
    let o = w.one(Command::Credit(Credit {
        request: req("BPNT:2026-01:1"),
        program: Program::Bpnt,
        card: CardRef::Family(FamilyId(1)),
        amount: 200_000 * RP,
    }));
    assert_eq!(o.code(), Code::Approved);
    assert_eq!(w.balances(pan(1)).bpnt, 200_000 * RP);
    let unknown = w.code(Command::Credit(Credit {
        request: req("BPNT:2026-01:7"),
        program: Program::Bpnt,
        card: CardRef::Family(FamilyId(7)),
        amount: 200_000 * RP,
    }));
    assert_eq!(unknown, Code::UnknownCard);
}

#[test]
fn purchase_approved_debits_wallet_credits_terminal() {
    let mut w = World::new();
    w.fund(pan(1), 0, 200_000 * RP);
    let o = w.one(purchase("P1", Program::Bpnt, pan(1), 50_000 * RP));
    assert_eq!(o.code(), Code::Approved);
    assert_eq!(de39(&o), "00");
    assert_eq!(w.balances(pan(1)).bpnt, 150_000 * RP);
    assert_eq!(w.terminal_balance("EWARONG-1"), 50_000 * RP as i64);
    assert_eq!(w.fx.postings_of(&o)[0].kind, PostingKind::Purchase);
    assert_eq!(w.card(pan(1)).purchased, 50_000 * RP);
    assert_eq!(w.fx.cards, vec![CardId(0)]);
    assert_eq!(w.fx.keys, vec![key("P1")]);
}

#[test]
fn withdrawal_approved_at_agent() {
    let mut w = World::new();
    w.fund(pan(1), 600_000 * RP, 0);
    let o = w.one(withdrawal("W1", Program::Pkh, pan(1), 100_000 * RP));
    assert_eq!(o.code(), Code::Approved);
    assert_eq!(w.terminal_balance("AGENT-1"), 100_000 * RP as i64);
    assert_eq!(w.card(pan(1)).day_count, 1);
    assert_eq!(w.card(pan(1)).withdrawn, 100_000 * RP);
}

#[test]
fn inquiry_returns_both_balances() {
    let mut w = World::new();
    w.fund(pan(1), 600_000 * RP, 200_000 * RP);
    let o = w.one(inquiry("Q1", pan(1), Some(RIGHT)));
    assert_eq!(o.code(), Code::Approved);
    assert_eq!(
        o.reply.balances,
        Some(Balances {
            pkh: 600_000 * RP,
            bpnt: 200_000 * RP
        })
    );
    assert!(w.fx.postings.is_empty());
}

#[test]
fn other_banks_terminal_posts_against_interbank_account() {
    let mut w = World::new();
    w.fund(pan(1), 300_000 * RP, 0);
    assert_eq!(w.ledger.interbank_account(OTHER_BANK), None);
    let foreign = acceptor(TerminalKind::Agent, OTHER_BANK, "BNI-AGENT-77");
    let o = w.one(Command::Withdrawal(payment(
        "W1",
        Program::Pkh,
        pan(1),
        100_000 * RP,
        foreign,
    )));
    assert_eq!(o.code(), Code::Approved);
    let ib = w.ledger.interbank_account(OTHER_BANK).expect("opened");
    assert_eq!(w.account_balance(ib), 100_000 * RP as i64);
    assert_eq!(w.fx.accounts_opened, vec![ib]);
    // A decline at another bank's terminal opens nothing.
    let other = acceptor(TerminalKind::Agent, BankCode(8), "MDR-AGENT-1");
    let declined = w.one(Command::Withdrawal(payment(
        "W2",
        Program::Pkh,
        pan(1),
        900_000 * RP,
        other,
    )));
    assert_eq!(declined.code(), Code::InsufficientFunds);
    assert_eq!(w.ledger.interbank_account(BankCode(8)), None);
}

#[test]
fn approval_codes_are_sequential_base36() {
    assert_eq!(ApprovalCode::from_sequence(1).as_str(), "000001");
    assert_eq!(ApprovalCode::from_sequence(36).as_str(), "000010");
    assert_eq!(ApprovalCode::from_sequence(36u64.pow(6)).as_str(), "000000");
    let mut w = World::new();
    w.fund(pan(1), 100 * RP, 0);
    let a = w.one(inquiry("Q1", pan(1), Some(RIGHT))).reply.approval;
    let b = w.one(inquiry("Q2", pan(1), Some(RIGHT))).reply.approval;
    assert_ne!(a, b);
}

// ---- declines, in INTERFACE §5 order -----------------------------------------

#[test]
fn unknown_terminal_of_this_bank_is_03_before_the_card() {
    let mut w = World::new();
    let nowhere = acceptor(TerminalKind::Ewarong, BANK, "NOT-REGISTERED");
    let o = w.one(Command::Purchase(payment(
        "P1",
        Program::Bpnt,
        pan(99),
        1,
        nowhere,
    )));
    assert_eq!(o.code(), Code::UnknownTerminal);
    assert_eq!(de39(&o), "03");
    let q = w.code(Command::BalanceInquiry(Inquiry {
        request: req("Q1"),
        pan: pan(1),
        acceptor: nowhere,
        pin: Some(RIGHT),
        precheck: Precheck::Passed,
    }));
    assert_eq!(q, Code::UnknownTerminal);
}

#[test]
fn unknown_card_is_14() {
    let mut w = World::new();
    let o = w.one(purchase("P1", Program::Bpnt, pan(42), 1));
    assert_eq!(o.code(), Code::UnknownCard);
    assert_eq!(de39(&o), "14");
    assert_eq!(
        w.code(credit("C1", Program::Pkh, pan(42), 1)),
        Code::UnknownCard
    );
}

#[test]
fn inactive_card_is_62_and_pin_not_counted() {
    let mut w = World::new();
    let o = w.one(Command::OpenCard {
        pan: pan(2),
        family: FamilyId(2),
        pvv: RIGHT,
        status: CardStatus::Inactive,
    });
    assert_eq!(o.code(), Code::Approved);
    let mut bad = payment("P1", Program::Pkh, pan(2), 1, shop());
    bad.pin = Some(WRONG);
    let o = w.one(Command::Purchase(bad));
    assert_eq!(o.code(), Code::CardInactive);
    assert_eq!(de39(&o), "62");
    assert_eq!(w.card(pan(2)).pin_tries, 0);
    // Credits still arrive on an inactive card.
    assert_eq!(
        w.code(credit("C1", Program::Pkh, pan(2), 5)),
        Code::Approved
    );
    assert_eq!(w.code(Command::Activate { pan: pan(2) }), Code::Approved);
    assert_eq!(
        w.code(purchase("P2", Program::Pkh, pan(2), 5)),
        Code::Approved
    );
}

#[test]
fn bank_blocked_card_is_62() {
    let mut w = World::new();
    w.fund(pan(1), 100, 0);
    assert_eq!(w.code(Command::Block { pan: pan(1) }), Code::Approved);
    let o = w.one(purchase("P1", Program::Pkh, pan(1), 1));
    assert_eq!(
        o.code(),
        Code::CardBlocked {
            reason: BlockReason::Bank
        }
    );
    assert_eq!(de39(&o), "62");
    assert_eq!(w.code(Command::Unblock { pan: pan(1) }), Code::Approved);
    assert_eq!(
        w.code(purchase("P2", Program::Pkh, pan(1), 1)),
        Code::Approved
    );
}

#[test]
fn closed_card_is_62_and_balance_returns_to_treasury() {
    let mut w = World::new();
    w.fund(pan(1), 300, 200);
    let o = w.one(Command::Close { pan: pan(1) });
    assert_eq!(o.code(), Code::Approved);
    assert_eq!(w.fx.postings_of(&o).len(), 2);
    assert_eq!(w.account_balance(TREASURY_ACCOUNT), 500);
    assert_eq!(w.balances(pan(1)), Balances::default());
    let p = w.one(purchase("P1", Program::Pkh, pan(1), 1));
    assert_eq!(p.code(), Code::CardClosed);
    assert_eq!(de39(&p), "62");
    assert_eq!(
        w.code(credit("C9", Program::Pkh, pan(1), 1)),
        Code::CardClosed
    );
    assert_eq!(w.code(Command::Close { pan: pan(1) }), Code::CardClosed);
    assert_eq!(w.code(Command::Activate { pan: pan(1) }), Code::CardClosed);
    // The family may be given a new card once the old one is closed.
    assert_eq!(w.code(open(pan(2), 1)), Code::Approved);
}

#[test]
fn pin_two_wrong_then_right_resets_the_count() {
    let mut w = World::new();
    w.fund(pan(1), 100, 0);
    let mut wrong = payment("P1", Program::Pkh, pan(1), 1, shop());
    wrong.pin = Some(WRONG);
    let o = w.one(Command::Purchase(wrong));
    assert_eq!(o.code(), Code::WrongPin { tries_left: 2 });
    assert_eq!(de39(&o), "55");
    assert_eq!(
        de44(&o).map(|d| d.as_str().to_owned()),
        Some("TRIES-LEFT:2".into())
    );
    // Wrong PINs on inquiries count too; an undecodable PIN block is wrong.
    let o = w.one(inquiry("Q1", pan(1), None));
    assert_eq!(o.code(), Code::WrongPin { tries_left: 1 });
    assert_eq!(
        de44(&o).map(|d| d.as_str().to_owned()),
        Some("TRIES-LEFT:1".into())
    );
    assert_eq!(w.code(inquiry("Q2", pan(1), Some(RIGHT))), Code::Approved);
    assert_eq!(w.card(pan(1)).pin_tries, 0);
    let o = w.one(inquiry("Q3", pan(1), Some(WRONG)));
    assert_eq!(o.code(), Code::WrongPin { tries_left: 2 });
}

#[test]
fn pin_third_wrong_blocks_75_until_unblock() {
    let mut w = World::new();
    w.fund(pan(1), 100, 0);
    assert_eq!(
        w.code(inquiry("Q1", pan(1), Some(WRONG))),
        Code::WrongPin { tries_left: 2 }
    );
    assert_eq!(
        w.code(inquiry("Q2", pan(1), Some(WRONG))),
        Code::WrongPin { tries_left: 1 }
    );
    let third = w.one(inquiry("Q3", pan(1), Some(WRONG)));
    assert_eq!(third.code(), Code::PinTriesExceeded);
    assert_eq!(de39(&third), "75");
    assert_eq!(w.card(pan(1)).status, CardStatus::PinBlocked);
    // Blocked: even the right PIN is refused, and is not counted.
    let after = w.one(inquiry("Q4", pan(1), Some(RIGHT)));
    assert_eq!(after.code(), Code::PinBlocked);
    assert_eq!(de39(&after), "75");
    assert_eq!(w.card(pan(1)).pin_tries, 3);
    assert_eq!(w.code(Command::Unblock { pan: pan(1) }), Code::Approved);
    assert_eq!(w.card(pan(1)).pin_tries, 0);
    assert_eq!(w.card(pan(1)).status, CardStatus::Active);
    assert_eq!(w.code(inquiry("Q5", pan(1), Some(RIGHT))), Code::Approved);
}

#[test]
fn pin_set_pin_lifts_a_pin_block_and_changes_the_pin() {
    let mut w = World::new();
    for k in ["Q1", "Q2", "Q3"] {
        w.one(inquiry(k, pan(1), Some(WRONG)));
    }
    assert_eq!(w.card(pan(1)).status, CardStatus::PinBlocked);
    assert_eq!(
        w.code(Command::SetPin {
            pan: pan(1),
            pvv: WRONG
        }),
        Code::Approved
    );
    assert_eq!(w.card(pan(1)).status, CardStatus::Active);
    assert_eq!(w.code(inquiry("Q4", pan(1), Some(WRONG))), Code::Approved);
    assert_eq!(
        w.code(inquiry("Q5", pan(1), Some(RIGHT))),
        Code::WrongPin { tries_left: 2 }
    );
}

#[test]
fn order_wrong_pin_comes_before_terminal_basket_and_amount() {
    let mut w = World::new();
    let mut p = payment("P1", Program::Bpnt, pan(1), 0, agent());
    p.pin = Some(WRONG);
    p.precheck = Precheck::Ineligible { item: *b"ROKK" };
    assert_eq!(
        w.code(Command::Purchase(p)),
        Code::WrongPin { tries_left: 2 }
    );
}

#[test]
fn unsupported_processing_code_is_12_after_the_pin() {
    let mut w = World::new();
    let mut q = Inquiry {
        request: req("Q1"),
        pan: pan(1),
        acceptor: ewarong(),
        pin: Some(RIGHT),
        precheck: Precheck::Unsupported,
    };
    let o = w.one(Command::BalanceInquiry(q));
    assert_eq!(o.code(), Code::Unsupported);
    assert_eq!(de39(&o), "12");
    q.request = req("Q2");
    q.pin = Some(WRONG);
    assert_eq!(
        w.code(Command::BalanceInquiry(q)),
        Code::WrongPin { tries_left: 2 }
    );
    // 12 comes before 58.
    let mut p = payment("P1", Program::Bpnt, pan(1), 1, agent());
    p.precheck = Precheck::Unsupported;
    assert_eq!(w.code(Command::Purchase(p)), Code::Unsupported);
}

#[test]
fn terminal_permissions_are_58() {
    let mut w = World::new();
    w.fund(pan(1), 1_000 * RP, 1_000 * RP);
    // BPNT purchase at an agent or a plain merchant.
    for at in [agent(), shop()] {
        let o = w.one(Command::Purchase(payment(
            "P",
            Program::Bpnt,
            pan(1),
            1,
            at,
        )));
        assert_eq!(o.code(), Code::NotPermittedOnTerminal);
        assert_eq!(de39(&o), "58");
        w.run(&[Command::ExpireKeys { before: u64::MAX }]);
    }
    // Withdrawal anywhere but at an agent.
    for at in [ewarong(), shop()] {
        let o = w.one(Command::Withdrawal(payment(
            "W",
            Program::Pkh,
            pan(1),
            1,
            at,
        )));
        assert_eq!(o.code(), Code::NotPermittedOnTerminal);
        w.run(&[Command::ExpireKeys { before: u64::MAX }]);
    }
    // PKH purchases anywhere registered.
    for (i, at) in [ewarong(), agent(), shop()].into_iter().enumerate() {
        let k = format!("PK{i}");
        let o = w.one(Command::Purchase(payment(&k, Program::Pkh, pan(1), 1, at)));
        assert_eq!(o.code(), Code::Approved);
    }
}

#[test]
fn bpnt_cash_out_is_57_under_food_only_and_allowed_under_cash_allowed() {
    let mut w = World::new();
    w.fund(pan(1), 0, 200_000 * RP);
    // 58 (terminal) is checked before 57 (cardholder).
    let at_shop = w.one(Command::Withdrawal(payment(
        "W0",
        Program::Bpnt,
        pan(1),
        1,
        shop(),
    )));
    assert_eq!(at_shop.code(), Code::NotPermittedOnTerminal);
    let o = w.one(withdrawal("W1", Program::Bpnt, pan(1), 100 * RP));
    assert_eq!(o.code(), Code::NotPermittedToCardholder);
    assert_eq!(de39(&o), "57");

    let mut config = LedgerConfig::new(BANK);
    config.rule_set = RuleSet::CashAllowed;
    let mut w = World::with(config);
    w.fund(pan(1), 0, 200_000 * RP);
    assert_eq!(
        w.code(withdrawal("W1", Program::Bpnt, pan(1), 100 * RP)),
        Code::Approved
    );
}

#[test]
fn ineligible_basket_is_57_with_item_and_nothing_debited() {
    let mut w = World::new();
    w.fund(pan(1), 0, 200_000 * RP);
    let mut p = payment("P1", Program::Bpnt, pan(1), 50_000 * RP, ewarong());
    p.precheck = Precheck::Ineligible { item: *b"ROKK" };
    let o = w.one(Command::Purchase(p));
    assert_eq!(o.code(), Code::Ineligible { item: *b"ROKK" });
    assert_eq!(de39(&o), "57");
    assert_eq!(
        de44(&o).map(|d| d.as_str().to_owned()),
        Some("INELIGIBLE:ROKK".into())
    );
    assert_eq!(w.balances(pan(1)).bpnt, 200_000 * RP);
    assert!(w.fx.postings.is_empty());
}

#[test]
fn amount_zero_too_large_or_bad_is_13() {
    let mut w = World::new();
    w.fund(pan(1), 100, 0);
    let o = w.one(purchase("P1", Program::Pkh, pan(1), 0));
    assert_eq!(o.code(), Code::AmountInvalid);
    assert_eq!(de39(&o), "13");
    assert_eq!(
        w.code(purchase("P2", Program::Pkh, pan(1), AMOUNT_WIRE_MAX + 1)),
        Code::AmountInvalid
    );
    let mut p = payment("P3", Program::Pkh, pan(1), 1, shop());
    p.precheck = Precheck::BadAmount;
    assert_eq!(w.code(Command::Purchase(p)), Code::AmountInvalid);
    assert_eq!(
        w.code(credit("C0", Program::Pkh, pan(1), 0)),
        Code::AmountInvalid
    );
    // An inquiry in the wrong currency.
    let q = Inquiry {
        request: req("Q1"),
        pan: pan(1),
        acceptor: ewarong(),
        pin: Some(RIGHT),
        precheck: Precheck::BadAmount,
    };
    assert_eq!(w.code(Command::BalanceInquiry(q)), Code::AmountInvalid);
}

#[test]
fn insufficient_funds_is_51_after_limits() {
    let mut w = World::new();
    w.fund(pan(1), 100, 0);
    let o = w.one(purchase("P1", Program::Pkh, pan(1), 101));
    assert_eq!(o.code(), Code::InsufficientFunds);
    assert_eq!(de39(&o), "51");
    // Over the per-transaction limit and the balance: the limit decides.
    let limit = w.code(withdrawal("W1", Program::Pkh, pan(1), 1_000_001 * RP));
    assert_eq!(limit, Code::AmountLimit);
    assert!(w.fx.postings.is_empty());
    assert_eq!(w.balances(pan(1)).pkh, 100);
}

// ---- withdrawal limits ----------------------------------------------------------

#[test]
fn limits_per_transaction_61() {
    let mut w = World::new();
    w.fund(pan(1), 3_000_000 * RP, 0);
    let o = w.one(withdrawal("W1", Program::Pkh, pan(1), 1_000_000 * RP + 1));
    assert_eq!(o.code(), Code::AmountLimit);
    assert_eq!(de39(&o), "61");
    assert_eq!(
        w.code(withdrawal("W2", Program::Pkh, pan(1), 1_000_000 * RP)),
        Code::Approved
    );
    // Purchases have no such limit.
    assert_eq!(
        w.code(purchase("P1", Program::Pkh, pan(1), 1_500_000 * RP)),
        Code::Approved
    );
}

#[test]
fn limits_per_day_amount_61_counting_both_wallets() {
    let mut config = LedgerConfig::new(BANK);
    config.rule_set = RuleSet::CashAllowed;
    let mut w = World::with(config);
    w.fund(pan(1), 4_000_000 * RP, 4_000_000 * RP);
    for (i, wallet) in [
        Program::Pkh,
        Program::Bpnt,
        Program::Pkh,
        Program::Bpnt,
        Program::Pkh,
    ]
    .into_iter()
    .enumerate()
    {
        let k = format!("W{i}");
        assert_eq!(
            w.code(withdrawal(&k, wallet, pan(1), 1_000_000 * RP)),
            Code::Approved
        );
    }
    assert_eq!(w.card(pan(1)).day_amount, 5_000_000 * RP);
    assert_eq!(
        w.code(withdrawal("W5", Program::Bpnt, pan(1), 1)),
        Code::AmountLimit
    );
    // The next WIB day starts afresh.
    w.now += DAY;
    assert_eq!(
        w.code(withdrawal("W6", Program::Bpnt, pan(1), 1)),
        Code::Approved
    );
    assert_eq!(w.card(pan(1)).day_amount, 1);
}

#[test]
fn limits_per_day_count_65_and_reset_at_wib_midnight() {
    let mut w = World::new();
    w.fund(pan(1), 1_000 * RP, 0);
    // T0 is 10:00 WIB; 13:59:59 later is 23:59:59 WIB.
    for i in 0..10 {
        assert_eq!(
            w.code(withdrawal(&format!("W{i}"), Program::Pkh, pan(1), 1)),
            Code::Approved
        );
    }
    let o = w.one(withdrawal("W10", Program::Pkh, pan(1), 1));
    assert_eq!(o.code(), Code::CountLimit);
    assert_eq!(de39(&o), "65");
    w.now = T0 + 14 * 3_600 - 1;
    assert_eq!(
        w.code(withdrawal("W11", Program::Pkh, pan(1), 1)),
        Code::CountLimit
    );
    w.now = T0 + 14 * 3_600;
    assert_eq!(wib_day(w.now), wib_day(T0) + 1);
    assert_eq!(
        w.code(withdrawal("W12", Program::Pkh, pan(1), 1)),
        Code::Approved
    );
}

#[test]
fn limits_reversed_withdrawal_gives_usage_back_same_day_only() {
    let mut w = World::new();
    w.fund(pan(1), 6_000_000 * RP, 0);
    for i in 0..5 {
        w.one(withdrawal(
            &format!("W{i}"),
            Program::Pkh,
            pan(1),
            1_000_000 * RP,
        ));
    }
    assert_eq!(
        w.code(withdrawal("W5", Program::Pkh, pan(1), 1)),
        Code::AmountLimit
    );
    assert_eq!(
        w.code(reversal("R1", "W4", pan(1), 1_000_000 * RP)),
        Code::Approved
    );
    assert_eq!(w.card(pan(1)).day_amount, 4_000_000 * RP);
    assert_eq!(w.card(pan(1)).day_count, 4);
    assert_eq!(
        w.code(withdrawal("W6", Program::Pkh, pan(1), 1_000_000 * RP)),
        Code::Approved
    );
    // Reversing yesterday's withdrawal does not touch today's usage.
    w.now += DAY;
    assert_eq!(
        w.code(withdrawal("W7", Program::Pkh, pan(1), RP)),
        Code::Approved
    );
    assert_eq!(
        w.code(reversal("R2", "W0", pan(1), 1_000_000 * RP)),
        Code::Approved
    );
    assert_eq!(w.card(pan(1)).day_amount, RP);
    assert_eq!(w.card(pan(1)).day_count, 1);
}

// ---- idempotency ---------------------------------------------------------------

#[test]
fn idempotency_same_key_same_content_replays_with_no_effect() {
    let mut w = World::new();
    w.fund(pan(1), 100_000 * RP, 0);
    let first = w.one(purchase("P1", Program::Pkh, pan(1), 10_000 * RP));
    let again = w.one(purchase("P1", Program::Pkh, pan(1), 10_000 * RP));
    assert!(!first.replayed);
    assert!(again.replayed);
    assert_eq!(again.reply, first.reply);
    assert!(w.fx.postings.is_empty());
    assert!(w.fx.keys.is_empty());
    assert_eq!(w.balances(pan(1)).pkh, 90_000 * RP);
    // A declined original replays its decline, even once funds arrived.
    let d = w.one(purchase("P2", Program::Pkh, pan(1), 500_000 * RP));
    assert_eq!(d.code(), Code::InsufficientFunds);
    w.fund(pan(1), 1_000_000 * RP, 0);
    let d2 = w.one(purchase("P2", Program::Pkh, pan(1), 500_000 * RP));
    assert!(d2.replayed);
    assert_eq!(d2.code(), Code::InsufficientFunds);
    // A retransmission with a fresh (even wrong) PIN block is still a replay.
    let mut p = payment("P1", Program::Pkh, pan(1), 10_000 * RP, shop());
    p.pin = Some(WRONG);
    let o = w.one(Command::Purchase(p));
    assert!(o.replayed);
    assert_eq!(w.card(pan(1)).pin_tries, 0);
    // Inquiries replay their original balances.
    let q = w.one(inquiry("Q1", pan(1), Some(RIGHT)));
    w.fund(pan(1), 1, 0);
    let q2 = w.one(inquiry("Q1", pan(1), Some(RIGHT)));
    assert_eq!(q2.reply.balances, q.reply.balances);
}

#[test]
fn idempotency_same_key_different_content_is_94_conflict() {
    let mut w = World::new();
    w.fund(pan(1), 100_000 * RP, 0);
    assert_eq!(
        w.code(purchase("P1", Program::Pkh, pan(1), 10 * RP)),
        Code::Approved
    );
    let o = w.one(purchase("P1", Program::Pkh, pan(1), 11 * RP));
    assert_eq!(o.code(), Code::KeyConflict);
    assert_eq!(de39(&o), "94");
    assert!(!o.replayed);
    // The caller's fingerprint counts as content too.
    let mut p = payment("P1", Program::Pkh, pan(1), 10 * RP, shop());
    p.request.fingerprint = Fingerprint([1; 16]);
    assert_eq!(w.code(Command::Purchase(p)), Code::KeyConflict);
    // So does the kind of request under the key.
    assert_eq!(
        w.code(withdrawal("P1", Program::Pkh, pan(1), 10 * RP)),
        Code::KeyConflict
    );
    assert_eq!(w.balances(pan(1)).pkh, 99_990 * RP);
    // A conflict is not stored: the original still replays.
    assert!(
        w.one(purchase("P1", Program::Pkh, pan(1), 10 * RP))
            .replayed
    );
}

#[test]
fn idempotency_credit_per_key_never_twice() {
    let mut w = World::new();
    let c = credit("PKH:2026-T1:1", Program::Pkh, pan(1), 750_000 * RP);
    let outs = w.run(&[c, c]);
    assert_eq!(outs[0].code(), Code::Approved);
    assert!(outs[1].replayed);
    assert_eq!(w.fx.postings.len(), 1);
    assert_eq!(w.balances(pan(1)).pkh, 750_000 * RP);
}

#[test]
fn idempotency_expired_keys_are_processed_anew() {
    let mut w = World::new();
    w.fund(pan(1), 100 * RP, 0);
    w.one(purchase("P1", Program::Pkh, pan(1), RP));
    w.now += 31 * DAY;
    w.one(purchase("P2", Program::Pkh, pan(1), RP));
    let stored = w.ledger.keys_len();
    let before = w.ledger.config().limits.key_expiry_cutoff(w.now);
    assert_eq!(before, w.now - 30 * DAY);
    w.one(Command::ExpireKeys { before });
    // P1 is forgotten; the funding credit is older still but kept: a
    // disbursement key must outlive retention (DESIGN §4).
    assert_eq!(w.ledger.keys_len(), stored - 1);
    assert!(w.ledger.key(&key("P1")).is_none());
    assert!(w.ledger.key(&key("P2")).is_some());
    assert!(w.ledger.key(&key("C-PKH-0")).is_some());
    let o = w.one(purchase("P1", Program::Pkh, pan(1), RP));
    assert!(!o.replayed);
    assert_eq!(w.balances(pan(1)).pkh, 97 * RP);
    // Re-running the old credit is still a replay: nothing is paid twice.
    let again = w.one(credit("C-PKH-0", Program::Pkh, pan(1), 100 * RP));
    assert!(again.replayed);
    assert_eq!(w.balances(pan(1)).pkh, 97 * RP);
    w.ledger.check_invariants().unwrap();
}

// ---- reversals ---------------------------------------------------------------------

#[test]
fn reversal_full_restores_every_effect() {
    let mut w = World::new();
    w.fund(pan(1), 0, 200_000 * RP);
    w.one(purchase("P1", Program::Bpnt, pan(1), 80_000 * RP));
    let o = w.one(reversal("R1", "P1", pan(1), 80_000 * RP));
    assert_eq!(o.code(), Code::Approved);
    assert_eq!(de39(&o), "00");
    let p = w.fx.postings_of(&o);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].kind, PostingKind::Reversal);
    assert_eq!(w.balances(pan(1)).bpnt, 200_000 * RP);
    assert_eq!(w.terminal_balance("EWARONG-1"), 0);
    assert_eq!(w.card(pan(1)).purchased, 0);
    assert_eq!(w.card(pan(1)).wallets[1].consumed, 0);
    assert!(w.ledger.key(&key("P1")).is_some_and(|r| r.reversed));
    assert!(w.fx.keys.contains(&key("P1")) && w.fx.keys.contains(&key("R1")));
    // The original retransmitted afterwards gets its original answer, no effect.
    let again = w.one(purchase("P1", Program::Bpnt, pan(1), 80_000 * RP));
    assert!(again.replayed);
    assert_eq!(again.code(), Code::Approved);
    assert_eq!(w.balances(pan(1)).bpnt, 200_000 * RP);
}

#[test]
fn reversal_second_is_00_without_second_credit() {
    let mut w = World::new();
    w.fund(pan(1), 100 * RP, 0);
    w.one(purchase("P1", Program::Pkh, pan(1), 40 * RP));
    assert_eq!(
        w.code(reversal("R1", "P1", pan(1), 40 * RP)),
        Code::Approved
    );
    let o = w.one(reversal("R2", "P1", pan(1), 40 * RP));
    assert_eq!(o.code(), Code::ReversalRepeat);
    assert_eq!(de39(&o), "00");
    assert!(w.fx.postings.is_empty());
    assert_eq!(w.balances(pan(1)).pkh, 100 * RP);
    // And the first reversal's own retransmission is a replay.
    assert!(w.one(reversal("R1", "P1", pan(1), 40 * RP)).replayed);
}

#[test]
fn reversal_of_unknown_original_then_late_original_is_94_reversed() {
    let mut w = World::new();
    w.fund(pan(1), 100 * RP, 0);
    let o = w.one(reversal("R1", "P9", pan(1), 40 * RP));
    assert_eq!(o.code(), Code::ReversalRecorded);
    assert_eq!(de39(&o), "00");
    let late = w.one(purchase("P9", Program::Pkh, pan(1), 40 * RP));
    assert_eq!(late.code(), Code::Reversed);
    assert_eq!(de39(&late), "94");
    assert_eq!(
        de44(&late).map(|d| d.as_str().to_owned()),
        Some("REVERSED".into())
    );
    assert!(w.fx.postings.is_empty());
    assert_eq!(w.balances(pan(1)).pkh, 100 * RP);
    // Again, and a second reversal of it, change nothing.
    assert_eq!(
        w.code(purchase("P9", Program::Pkh, pan(1), 40 * RP)),
        Code::Reversed
    );
    assert_eq!(
        w.code(reversal("R2", "P9", pan(1), 40 * RP)),
        Code::ReversalRepeat
    );
}

#[test]
fn reversal_mismatch_is_12_and_reverses_nothing() {
    let mut w = World::new();
    w.open_second_card();
    w.fund(pan(1), 100 * RP, 0);
    w.one(purchase("P1", Program::Pkh, pan(1), 40 * RP));
    let o = w.one(reversal("R1", "P1", pan(1), 41 * RP));
    assert_eq!(o.code(), Code::ReversalMismatch);
    assert_eq!(de39(&o), "12");
    assert_eq!(
        w.code(reversal("R2", "P1", pan(2), 40 * RP)),
        Code::ReversalMismatch
    );
    assert_eq!(w.balances(pan(1)).pkh, 60 * RP);
    assert!(w.ledger.key(&key("P1")).is_some_and(|r| !r.reversed));
    // A credit is not reversible by a card reversal; nor is a reversal.
    assert_eq!(
        w.code(reversal("R3", "C-PKH-0", pan(1), 100 * RP)),
        Code::ReversalMismatch
    );
    assert_eq!(
        w.code(reversal("R4", "R1", pan(1), 41 * RP)),
        Code::ReversalMismatch
    );
    // Naming itself as the original.
    assert_eq!(
        w.code(reversal("R5", "R5", pan(1), 1)),
        Code::ReversalMismatch
    );
    // The right one still works.
    assert_eq!(
        w.code(reversal("R6", "P1", pan(1), 40 * RP)),
        Code::Approved
    );
}

#[test]
fn reversal_of_declined_original_is_00_with_nothing_to_undo() {
    let mut w = World::new();
    assert_eq!(
        w.code(purchase("P1", Program::Pkh, pan(1), 40 * RP)),
        Code::InsufficientFunds
    );
    let o = w.one(reversal("R1", "P1", pan(1), 40 * RP));
    assert_eq!(o.code(), Code::Approved);
    assert!(w.fx.postings.is_empty());
    assert_eq!(w.balances(pan(1)).pkh, 0);
}

// ---- sweep ------------------------------------------------------------------------------

#[test]
fn sweep_blocks_after_90_days_without_use_credits_do_not_count() {
    let mut w = World::new();
    w.fund(pan(1), 100 * RP, 0); // first credit at T0: the clock starts
    w.now = T0 + 60 * DAY;
    w.fund(pan(1), 100 * RP, 0); // a later credit is not use
    let early = w.one(Command::Sweep {
        as_of: T0 + 90 * DAY - 1,
    });
    assert!(w.fx.sweep_of(&early).is_empty());
    w.now = T0 + 90 * DAY;
    let o = w.one(Command::Sweep { as_of: w.now });
    let lines = w.fx.sweep_of(&o);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].blocked);
    assert_eq!(lines[0].returned, [0, 0]);
    assert_eq!(lines[0].pan, pan(1));
    assert_eq!(
        w.card(pan(1)).status,
        CardStatus::Blocked {
            reason: BlockReason::Dormant
        }
    );
    let p = w.one(purchase("P1", Program::Pkh, pan(1), 1));
    assert_eq!(
        p.code(),
        Code::CardBlocked {
            reason: BlockReason::Dormant
        }
    );
    assert_eq!(de39(&p), "62");
    // Unblocking restarts the clock: the next sweep leaves it alone.
    w.one(Command::Unblock { pan: pan(1) });
    w.now += DAY;
    let o = w.one(Command::Sweep { as_of: w.now });
    assert!(w.fx.sweep_of(&o).is_empty());
    assert_eq!(w.card(pan(1)).status, CardStatus::Active);
}

#[test]
fn sweep_use_keeps_a_card_alive() {
    let mut w = World::new();
    w.fund(pan(1), 100 * RP, 0);
    w.now = T0 + 80 * DAY;
    w.one(inquiry("Q1", pan(1), Some(RIGHT)));
    w.now = T0 + 100 * DAY;
    w.one(Command::Sweep { as_of: w.now });
    assert_eq!(w.card(pan(1)).status, CardStatus::Active);
    // A wrong PIN is not a cardholder transaction.
    w.now = T0 + 165 * DAY;
    w.one(inquiry("Q2", pan(1), Some(WRONG)));
    w.now = T0 + 170 * DAY;
    w.one(Command::Sweep { as_of: w.now });
    assert_eq!(
        w.card(pan(1)).status,
        CardStatus::Blocked {
            reason: BlockReason::Dormant
        }
    );
}

#[test]
fn sweep_never_used_never_credited_counts_from_opening() {
    let mut w = World::new();
    w.now = T0 + 90 * DAY;
    let o = w.one(Command::Sweep { as_of: w.now });
    assert_eq!(w.fx.sweep_of(&o).len(), 1);
}

#[test]
fn sweep_returns_credits_unspent_after_105_days_oldest_first() {
    let mut w = World::new();
    w.one(credit("C1", Program::Pkh, pan(1), 300 * RP)); // T0
    w.now = T0 + 30 * DAY;
    w.one(credit("C2", Program::Pkh, pan(1), 500 * RP)); // T0+30
    w.now = T0 + 40 * DAY;
    // Spends 200 of C1 (oldest first).
    w.one(purchase("P1", Program::Pkh, pan(1), 200 * RP));
    w.now = T0 + 105 * DAY;
    let o = w.one(Command::Sweep { as_of: w.now });
    // 100 left of C1 returns; C2 is only 75 days old.
    let lines = w.fx.sweep_of(&o).to_vec();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].returned, [100 * RP, 0]);
    assert!(!lines[0].blocked); // used at T0+40
    let posts = w.fx.postings_of(&o).to_vec();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].kind, PostingKind::Sweep);
    assert_eq!(posts[0].credit, TREASURY_ACCOUNT);
    assert_eq!(w.balances(pan(1)).pkh, 500 * RP);
    // Spend 100 more: it comes out of C2, then C2's remaining 400 returns.
    w.now = T0 + 120 * DAY;
    w.one(purchase("P2", Program::Pkh, pan(1), 100 * RP));
    w.now = T0 + 135 * DAY;
    let o = w.one(Command::Sweep { as_of: w.now });
    assert_eq!(w.fx.sweep_of(&o)[0].returned, [400 * RP, 0]);
    assert_eq!(w.balances(pan(1)).pkh, 0);
    assert_eq!(w.account_balance(TREASURY_ACCOUNT), 500 * RP as i64);
}

#[test]
fn sweep_returns_one_posting_per_lot_oldest_first() {
    let mut w = World::new();
    w.one(credit("C1", Program::Bpnt, pan(1), 200 * RP));
    w.now += DAY;
    w.one(credit("C2", Program::Bpnt, pan(1), 300 * RP));
    w.now += 200 * DAY;
    let o = w.one(Command::Sweep { as_of: w.now });
    let amounts: Vec<u64> = w.fx.postings_of(&o).iter().map(|p| p.amount).collect();
    assert_eq!(amounts, vec![200 * RP, 300 * RP]);
    assert_eq!(w.fx.sweep_of(&o)[0].returned, [0, 500 * RP]);
    assert!(w.fx.sweep_of(&o)[0].blocked);
}

#[test]
fn sweep_reversal_after_return_puts_money_back_on_its_lot() {
    let mut w = World::new();
    w.one(credit("C1", Program::Pkh, pan(1), 100 * RP));
    w.now = T0 + 100 * DAY;
    w.one(purchase("P1", Program::Pkh, pan(1), 30 * RP));
    w.now = T0 + 105 * DAY;
    let o = w.one(Command::Sweep { as_of: w.now });
    assert_eq!(w.fx.sweep_of(&o)[0].returned, [70 * RP, 0]);
    // The purchase is reversed: as if it never happened, its 30 belong to C1,
    // which is past its 105 days, so the next sweep returns them too.
    w.one(reversal("R1", "P1", pan(1), 30 * RP));
    assert_eq!(w.balances(pan(1)).pkh, 30 * RP);
    w.now += DAY;
    let o = w.one(Command::Sweep { as_of: w.now });
    assert_eq!(w.fx.sweep_of(&o)[0].returned, [30 * RP, 0]);
}

#[test]
fn sweep_keeps_spent_lots_while_their_payments_can_be_reversed() {
    let mut w = World::new();
    w.one(credit("C1", Program::Pkh, pan(1), 100 * RP)); // T0
    w.now = T0 + 100 * DAY;
    w.one(credit("C2", Program::Pkh, pan(1), 100 * RP));
    w.now = T0 + 101 * DAY;
    w.one(purchase("P1", Program::Pkh, pan(1), 200 * RP)); // spends C1 and C2
    w.now = T0 + 102 * DAY;
    w.one(Command::Sweep { as_of: w.now });
    assert_eq!(w.card(pan(1)).lots[0].lots.len(), 2, "spent but reversible");
    w.now = T0 + 103 * DAY;
    w.one(reversal("R1", "P1", pan(1), 200 * RP));
    // C1 (106 days old) returns, C2 (6 days old) stays.
    w.now = T0 + 106 * DAY;
    let o = w.one(Command::Sweep { as_of: w.now });
    assert_eq!(w.fx.sweep_of(&o)[0].returned, [100 * RP, 0]);
    assert_eq!(w.balances(pan(1)).pkh, 100 * RP);
}

#[test]
fn sweep_forgets_spent_lots_after_the_reversal_window() {
    let mut w = World::new();
    for i in 0..5u64 {
        w.now = T0 + i * 30 * DAY;
        w.one(credit(&format!("C{i}"), Program::Bpnt, pan(1), 200 * RP));
        w.one(purchase(&format!("P{i}"), Program::Bpnt, pan(1), 200 * RP));
    }
    w.now = T0 + 300 * DAY;
    w.one(Command::Sweep { as_of: w.now });
    let lots = &w.card(pan(1)).lots[1];
    // Lots that arrived ≤ 300 − 135 days ago and are spent are merged.
    assert_eq!(lots.lots.len(), 0);
    assert_eq!(lots.floor_end, 1_000 * RP);
    assert_eq!(u64::from(lots.floor_arrived_at), T0 + 120 * DAY);
}

#[test]
fn sweep_as_of_never_goes_back() {
    let mut w = World::new();
    w.now = T0 + 100 * DAY;
    w.one(Command::Sweep { as_of: w.now });
    w.one(Command::Unblock { pan: pan(1) });
    w.fund(pan(1), 100, 0);
    // An earlier as_of is treated as the previous one.
    w.one(Command::Sweep { as_of: T0 });
    assert_eq!(w.ledger.counters().last_sweep_as_of, T0 + 100 * DAY);
}

// ---- card administration ------------------------------------------------------------------

#[test]
fn replace_moves_balances_history_and_usage_and_closes_the_old_card() {
    let mut w = World::new();
    w.fund(pan(1), 600_000 * RP, 200_000 * RP);
    w.one(withdrawal("W1", Program::Pkh, pan(1), 100_000 * RP));
    w.one(purchase("P1", Program::Bpnt, pan(1), 50_000 * RP));
    let o = w.one(Command::Replace {
        old_pan: pan(1),
        new_pan: pan(5),
        pvv: WRONG,
    });
    assert_eq!(o.code(), Code::Approved);
    let posts = w.fx.postings_of(&o).to_vec();
    assert_eq!(posts.len(), 2);
    assert!(posts.iter().all(|p| p.kind == PostingKind::Replace));
    assert_eq!(w.balances(pan(1)), Balances::default());
    assert_eq!(
        w.balances(pan(5)),
        Balances {
            pkh: 500_000 * RP,
            bpnt: 150_000 * RP
        }
    );
    assert_eq!(w.card(pan(1)).status, CardStatus::Closed);
    assert_eq!(w.card(pan(5)).status, CardStatus::Active);
    assert_eq!(w.card(pan(5)).day_count, 1);
    assert_eq!(w.card(pan(5)).lots[0].lots.len(), 1);
    assert!(w.card(pan(1)).lots[0].lots.is_empty());
    assert_eq!(w.card(pan(5)).wallets[0].credited, 600_000 * RP);
    assert_eq!(
        w.code(purchase("P2", Program::Pkh, pan(1), 1)),
        Code::CardClosed
    );
    let mut p = payment("P3", Program::Pkh, pan(5), 1, shop());
    p.pin = Some(WRONG);
    assert_eq!(w.code(Command::Purchase(p)), Code::Approved);
    // Credits by family follow the new card; by the old PAN they are refused.
    let c = w.one(Command::Credit(Credit {
        request: req("BPNT:2026-02:1"),
        program: Program::Bpnt,
        card: CardRef::Family(FamilyId(1)),
        amount: 200_000 * RP,
    }));
    assert_eq!(c.code(), Code::Approved);
    assert_eq!(w.balances(pan(5)).bpnt, 350_000 * RP);
    assert_eq!(
        w.code(credit("C-old", Program::Pkh, pan(1), 1)),
        Code::CardClosed
    );
    // A reversal of the old card's payment credits the new card.
    assert_eq!(
        w.code(reversal("R1", "W1", pan(1), 100_000 * RP)),
        Code::Approved
    );
    assert_eq!(w.balances(pan(5)).pkh, 600_000 * RP - 1);
    assert_eq!(w.card(pan(5)).day_count, 0);
    assert_eq!(w.card(pan(1)).withdrawn, 0);
    // Errors.
    assert_eq!(
        w.code(Command::Replace {
            old_pan: pan(1),
            new_pan: pan(6),
            pvv: RIGHT
        }),
        Code::CardClosed
    );
    assert_eq!(
        w.code(Command::Replace {
            old_pan: pan(5),
            new_pan: pan(1),
            pvv: RIGHT
        }),
        Code::AlreadyExists
    );
    assert_eq!(
        w.code(Command::Replace {
            old_pan: pan(77),
            new_pan: pan(78),
            pvv: RIGHT
        }),
        Code::UnknownCard
    );
}

#[test]
fn admin_already_exists_is_94_and_transitions_are_checked() {
    let mut w = World::new();
    let o = w.one(open(pan(1), 9));
    assert_eq!(o.code(), Code::AlreadyExists);
    assert_eq!(de39(&o), "94");
    assert_eq!(w.code(open(pan(9), 1)), Code::AlreadyExists); // family has a card
    assert_eq!(
        w.code(Command::OpenTerminalAccount {
            merchant: merchant_id("AGENT-1"),
            kind: TerminalKind::Agent
        }),
        Code::AlreadyExists
    );
    assert_eq!(
        w.code(Command::OpenCard {
            pan: pan(9),
            family: FamilyId(9),
            pvv: RIGHT,
            status: CardStatus::Closed
        }),
        Code::InvalidTransition
    );
    w.one(Command::Block { pan: pan(1) });
    let o = w.one(Command::Activate { pan: pan(1) });
    assert_eq!(o.code(), Code::InvalidTransition);
    assert_eq!(de39(&o), "12");
    w.one(Command::OpenCard {
        pan: pan(3),
        family: FamilyId(3),
        pvv: RIGHT,
        status: CardStatus::Inactive,
    });
    assert_eq!(
        w.code(Command::Unblock { pan: pan(3) }),
        Code::InvalidTransition
    );
    assert_eq!(w.code(Command::Activate { pan: pan(3) }), Code::Approved);
    assert_eq!(w.code(Command::Activate { pan: pan(3) }), Code::Approved);
    assert_eq!(w.code(Command::Block { pan: pan(42) }), Code::UnknownCard);
    assert_eq!(
        w.code(Command::SetPin {
            pan: pan(42),
            pvv: RIGHT
        }),
        Code::UnknownCard
    );
    assert_eq!(w.code(Command::Unblock { pan: pan(42) }), Code::UnknownCard);
    assert_eq!(w.code(Command::Close { pan: pan(42) }), Code::UnknownCard);
    assert_eq!(
        w.code(Command::Activate { pan: pan(42) }),
        Code::UnknownCard
    );
}

#[test]
fn overflow_is_96_and_nothing_applied() {
    let mut w = World::new();
    // Above i64: refused outright.
    let o = w.one(credit("C1", Program::Pkh, pan(1), u64::MAX));
    assert_eq!(o.code(), Code::Overflow);
    assert_eq!(de39(&o), "96");
    let big = i64::MAX as u64;
    assert_eq!(
        w.code(credit("C2", Program::Pkh, pan(1), big)),
        Code::Approved
    );
    // The wallet would pass i64::MAX.
    assert_eq!(
        w.code(credit("C3", Program::Pkh, pan(1), 1)),
        Code::Overflow
    );
    // The source account would pass i64::MIN.
    w.open_second_card();
    assert_eq!(
        w.code(credit("C4", Program::Pkh, pan(2), 2)),
        Code::Overflow
    );
    assert_eq!(
        w.code(credit("C5", Program::Pkh, pan(2), 1)),
        Code::Approved
    );
    assert_eq!(w.balances(pan(2)).pkh, 1);
    assert_eq!(w.account_balance(SOURCE_ACCOUNT), i64::MIN);
    // The treasury would pass i64::MAX: the close applies nothing.
    assert_eq!(w.code(Command::Close { pan: pan(1) }), Code::Approved);
    assert_eq!(w.account_balance(TREASURY_ACCOUNT), i64::MAX);
    let o = w.one(Command::Close { pan: pan(2) });
    assert_eq!(o.code(), Code::Overflow);
    assert!(w.fx.postings.is_empty());
    assert_eq!(w.card(pan(2)).status, CardStatus::Active);
    assert_eq!(w.balances(pan(2)).pkh, 1);
}

// ---- time, batches, effects, persistence -----------------------------------------------------

#[test]
fn time_never_goes_back() {
    let mut w = World::new();
    w.now = T0 + DAY;
    w.fund(pan(1), 100, 0);
    w.now = T0; // clock stepped back
    w.one(withdrawal("W1", Program::Pkh, pan(1), 1));
    assert_eq!(w.card(pan(1)).day, wib_day(T0 + DAY));
    assert_eq!(w.ledger.counters().now, T0 + DAY);
}

#[test]
fn effects_list_each_changed_card_once_and_opened_accounts() {
    let mut w = World::new();
    let outs = w.run(&[
        open(pan(2), 2),
        credit("C1", Program::Pkh, pan(2), 100),
        credit("C2", Program::Bpnt, pan(2), 100),
        purchase("P1", Program::Pkh, pan(2), 10),
    ]);
    assert!(outs.iter().all(|o| o.code() == Code::Approved));
    assert_eq!(w.fx.cards, vec![CardId(1)]);
    assert_eq!(w.fx.accounts_opened.len(), 2);
    assert_eq!(w.fx.postings.len(), 3);
    let ids: Vec<u64> = w.fx.postings.iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![0, 1, 2]);
    assert_eq!(outs[3].postings, Span { start: 2, len: 1 });
    assert_eq!(w.fx.batch, w.ledger.counters().batches);
}

#[test]
fn snapshot_restores_to_an_equal_ledger() {
    let mut w = World::new();
    w.fund(pan(1), 100 * RP, 100 * RP);
    w.one(purchase("P1", Program::Pkh, pan(1), 10 * RP));
    w.one(reversal("R1", "P9", pan(1), 1));
    let snap = w.ledger.snapshot();
    let json = serde_json::to_string(&snap).expect("serializes");
    let back: Snapshot = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, snap);
    let mut restored = Ledger::restore(back).expect("valid");
    assert_eq!(restored.snapshot(), snap);
    // Both continue identically.
    let batch = [
        purchase("P1", Program::Pkh, pan(1), 10 * RP),
        purchase("P9", Program::Pkh, pan(1), 1),
        purchase("P2", Program::Pkh, pan(1), 10 * RP),
    ];
    let mut fx = Effects::default();
    restored.apply(&batch, w.now + 1, &mut fx);
    w.now += 1;
    let outs = w.run(&batch);
    assert_eq!(fx.outcomes, outs);
    assert_eq!(restored.snapshot(), w.ledger.snapshot());
}

#[test]
fn snapshot_restore_refuses_broken_books() {
    let mut w = World::new();
    w.fund(pan(1), 100, 0);
    let good = w.ledger.snapshot();

    let mut unbalanced = good.clone();
    unbalanced.accounts[0].balance += 1;
    assert!(Ledger::restore(unbalanced).is_err());

    let mut negative = good.clone();
    let acct = negative.cards[0].wallets[0].account.0 as usize;
    negative.accounts[acct].balance = -100;
    negative.accounts[0].balance += 200;
    assert!(Ledger::restore(negative).is_err());

    let mut lots = good.clone();
    lots.cards[0].wallets[0].credited += 1;
    assert!(Ledger::restore(lots).is_err());

    let mut dup = good.clone();
    let card = dup.cards[0].clone();
    dup.cards.push(card);
    assert!(Ledger::restore(dup).is_err());

    assert!(Ledger::restore(good).is_ok());
}

#[test]
fn commands_round_trip_through_serde_for_the_journal() {
    let batch = vec![
        purchase(
            "020|002|TERM0001|000001|0105030000",
            Program::Bpnt,
            pan(1),
            5,
        ),
        reversal("040|002|TERM0001|000002|0105030001", "P1", pan(1), 5),
        credit("PKH:2026-T1:3201234567890123", Program::Pkh, pan(1), 1),
        Command::Sweep { as_of: T0 },
    ];
    let json = serde_json::to_string(&batch).expect("serializes");
    assert!(json.contains("\"6000020000000001\""));
    let back: Vec<Command> = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, batch);
}

#[test]
fn content_hash_ignores_pin_but_not_terminal() {
    let a = payment("P1", Program::Pkh, pan(1), 5, shop());
    let mut b = a;
    b.pin = None;
    assert_eq!(
        Command::Purchase(a).content_hash(),
        Command::Purchase(b).content_hash()
    );
    let mut c = a;
    c.acceptor.merchant = merchant_id("SHOP-2");
    assert_ne!(
        Command::Purchase(a).content_hash(),
        Command::Purchase(c).content_hash()
    );
    assert_ne!(
        Command::Purchase(a).content_hash(),
        Command::Withdrawal(a).content_hash()
    );
}

// ---- the DE39 table --------------------------------------------------------------------------

#[test]
fn de39_table_covers_every_code() {
    let table = [
        (Code::Approved, "00"),
        (Code::ReversalRecorded, "00"),
        (Code::ReversalRepeat, "00"),
        (Code::UnknownTerminal, "03"),
        (Code::UnknownCard, "14"),
        (Code::CardInactive, "62"),
        (
            Code::CardBlocked {
                reason: BlockReason::Bank,
            },
            "62",
        ),
        (
            Code::CardBlocked {
                reason: BlockReason::Dormant,
            },
            "62",
        ),
        (Code::CardClosed, "62"),
        (Code::PinBlocked, "75"),
        (Code::PinTriesExceeded, "75"),
        (Code::WrongPin { tries_left: 1 }, "55"),
        (Code::Unsupported, "12"),
        (Code::ReversalMismatch, "12"),
        (Code::InvalidTransition, "12"),
        (Code::NotPermittedOnTerminal, "58"),
        (Code::NotPermittedToCardholder, "57"),
        (Code::Ineligible { item: *b"GULA" }, "57"),
        (Code::AmountInvalid, "13"),
        (Code::AmountLimit, "61"),
        (Code::CountLimit, "65"),
        (Code::InsufficientFunds, "51"),
        (Code::KeyConflict, "94"),
        (Code::Reversed, "94"),
        (Code::AlreadyExists, "94"),
        (Code::Overflow, "96"),
    ];
    for (code, de39) in table {
        assert_eq!(code.de39(), de39, "{code:?}");
        assert_eq!(code.is_approved(), de39 == "00", "{code:?}");
        let with_detail = matches!(
            code,
            Code::WrongPin { .. } | Code::Reversed | Code::Ineligible { .. }
        );
        assert_eq!(code.de44().is_some(), with_detail, "{code:?}");
    }
    assert_eq!(
        Code::WrongPin { tries_left: 255 }
            .de44()
            .map(|d| d.as_str().to_owned()),
        Some("TRIES-LEFT:255".into())
    );
}

impl World {
    fn open_second_card(&mut self) {
        assert_eq!(self.code(open(pan(2), 2)), Code::Approved);
    }
}

#[test]
fn sizes_stay_small() {
    // The hot path copies commands and outcomes; the key store holds one
    // record per request for the retention period. Print them for the record.
    let sizes = [
        ("Command", std::mem::size_of::<Command>()),
        ("Outcome", std::mem::size_of::<Outcome>()),
        ("Posting", std::mem::size_of::<Posting>()),
        ("RequestKey", std::mem::size_of::<RequestKey>()),
        ("KeyRecord", std::mem::size_of::<KeyRecord>()),
        ("Card", std::mem::size_of::<Card>()),
        (
            "CardState",
            std::mem::size_of::<crate::ledger::state::CardState>(),
        ),
    ];
    println!("{sizes:?}");
    assert_eq!(std::mem::size_of::<RequestKey>(), 48);
    assert!(std::mem::size_of::<Command>() <= 192);
    assert!(std::mem::size_of::<KeyRecord>() <= 160);
    // The card as the ledger holds it (every family's, in a wave): see
    // `CardState`.
    assert_eq!(std::mem::size_of::<crate::ledger::state::CardState>(), 160);
    // What a purchase or withdrawal reads and writes is in the first 112
    // bytes (family, marks, lots and clocks after it).
    assert!(std::mem::offset_of!(crate::ledger::state::CardState, flags) < 112);
    assert!(std::mem::offset_of!(crate::ledger::state::CardState, family) >= 104);
}

#[test]
fn snapshot_image_encodes_as_the_snapshot_and_stays_frozen() {
    let mut w = World::new();
    w.fund(pan(1), 100_000 * RP, 0);
    // More keys than one block holds, a kept credit and an expired purchase.
    for b in 0..6u64 {
        w.now += 10;
        let batch: Vec<Command> = (0..1000u64)
            .map(|i| purchase(&format!("P{}", b * 1000 + i), Program::Pkh, pan(1), 1))
            .collect();
        assert!(w.run(&batch).iter().all(|o| o.code() == Code::Approved));
    }
    w.now += 10;
    w.one(Command::ExpireKeys { before: T0 + 11 });
    let snap = w.ledger.snapshot();
    let image = w.ledger.snapshot_image();
    let bytes = postcard::to_stdvec(&snap).expect("snapshot encodes");
    assert_eq!(postcard::to_stdvec(&image).expect("image encodes"), bytes);
    assert_eq!(
        postcard::to_stdvec(&w.ledger.snapshot_ref()).expect("encodes in place"),
        bytes
    );
    assert_eq!(image.keys_len(), snap.keys.len());
    // The ledger goes on: an old record is marked reversed (its block is
    // shared with the image), new keys are added, more keys expire.
    w.now += 10;
    assert_eq!(w.code(reversal("R1", "P1500", pan(1), 1)), Code::Approved);
    for i in 0..5000u64 {
        w.one(purchase(&format!("Q{i}"), Program::Pkh, pan(1), 1));
    }
    w.now += 10;
    w.one(Command::ExpireKeys { before: T0 + 35 });
    assert_ne!(w.ledger.snapshot(), snap);
    // The image still says what the ledger held when it was taken.
    let later = postcard::to_stdvec(&image).expect("image encodes");
    assert_eq!(later, bytes, "the image changed with the ledger");
    let back: Snapshot = postcard::from_bytes(&later).expect("reads back as a snapshot");
    assert_eq!(back, snap);
    assert!(Ledger::restore(back).is_ok());
}

// ---- period credits (disbursement waves) ------------------------------------

fn period_credit(program: Program, period: u16, family: u64, amount: Amount) -> Command {
    Command::PeriodCredit(PeriodCredit {
        program,
        period,
        family: FamilyId(family),
        amount,
    })
}

#[test]
fn period_credit_once_per_family_program_and_period() {
    let mut w = World::new();
    let jan = 2026 * 12;
    let first = w.one(period_credit(Program::Bpnt, jan, 1, 200_000 * RP));
    assert_eq!(first.code(), Code::Approved);
    assert!(!first.replayed);
    assert!(first.reply.approval.is_some());
    assert_eq!(w.fx.postings_of(&first).len(), 1);
    assert_eq!(w.fx.postings_of(&first)[0].debit, SOURCE_ACCOUNT);
    // No idempotency record: the card's marks are the memory.
    assert_eq!(w.ledger.keys_len(), 0);
    assert!(w.fx.keys.is_empty());

    // Again, in a later batch and with another amount: already credited,
    // no posting, no new approval code.
    let approvals = w.ledger.counters().approvals;
    let again = w.one(period_credit(Program::Bpnt, jan, 1, 250_000 * RP));
    assert_eq!(again.code(), Code::Approved);
    assert!(again.replayed);
    assert_eq!(again.reply.approval, None);
    assert!(w.fx.postings.is_empty());
    assert_eq!(w.ledger.counters().approvals, approvals);
    assert_eq!(w.balances(pan(1)).bpnt, 200_000 * RP);

    // Twice in one batch: once.
    let outs = w.run(&[
        period_credit(Program::Bpnt, jan + 1, 1, 200_000 * RP),
        period_credit(Program::Bpnt, jan + 1, 1, 200_000 * RP),
    ]);
    assert!(!outs[0].replayed && outs[1].replayed);
    assert_eq!(w.fx.postings.len(), 1);
    assert_eq!(w.balances(pan(1)).bpnt, 400_000 * RP);

    // The same period number of the other program is its own credit.
    let pkh = w.one(period_credit(Program::Pkh, jan, 1, 750_000 * RP));
    assert!(!pkh.replayed);
    assert_eq!(
        w.balances(pan(1)),
        Balances {
            pkh: 750_000 * RP,
            bpnt: 400_000 * RP
        }
    );
}

#[test]
fn period_credit_declines_like_a_credit() {
    let mut w = World::new();
    assert_eq!(
        w.code(period_credit(Program::Pkh, 100, 7, 1)),
        Code::UnknownCard
    );
    assert_eq!(
        w.code(period_credit(Program::Pkh, 100, 1, 0)),
        Code::AmountInvalid
    );
    // A decline marks nothing: the same period can still be paid.
    assert_eq!(
        w.code(period_credit(Program::Pkh, 100, 1, 5)),
        Code::Approved
    );
    assert_eq!(
        w.code(period_credit(Program::Pkh, PERIOD_MAX + 1, 1, 5)),
        Code::KeyConflict
    );
    assert_eq!(w.code(Command::Close { pan: pan(1) }), Code::Approved);
    assert_eq!(
        w.code(period_credit(Program::Pkh, 101, 1, 5)),
        Code::CardClosed
    );
    // A period paid before the card closed is still "already credited".
    let o = w.one(period_credit(Program::Pkh, 100, 1, 5));
    assert_eq!(o.code(), Code::Approved);
    assert!(o.replayed);
}

#[test]
fn period_credit_window_of_64_periods_refuses_what_it_forgot() {
    let mut w = World::new();
    let p = |n: u16| period_credit(Program::Bpnt, 24_000 + n, 1, 1);
    // Out of order inside the window: each once.
    for n in [10, 3, 40, 66] {
        assert_eq!(w.code(p(n)), Code::Approved, "period {n}");
    }
    // 66 is the newest: 3 (63 below it) is still known, 2 would be paid
    // blind and is refused, 10 and 40 are known.
    for n in [3, 10, 40, 66] {
        assert!(w.one(p(n)).replayed, "period {n}");
    }
    assert_eq!(w.code(p(2)), Code::KeyConflict);
    // Paying 70 moves the window past 3 (forgotten: now refused, not paid
    // again), 10 stays known.
    assert_eq!(w.code(p(70)), Code::Approved);
    assert_eq!(w.code(p(3)), Code::KeyConflict);
    assert!(w.one(p(10)).replayed);
    assert_eq!(w.balances(pan(1)).bpnt, 5);
}

#[test]
fn marks_insert_keeps_every_mark_that_fits() {
    let mut m = Marks::default();
    for p in [500u16, 490, 520, 553] {
        assert_eq!(m.check(p), Ok(()));
        m.insert(p);
    }
    for p in [490u16, 500, 520, 553] {
        assert!(m.contains(p), "{p}");
        assert_eq!(m.check(p), Err(MarkError::Already));
    }
    assert!(!m.contains(491));
    assert_eq!(m.check(489), Err(MarkError::TooOld));
    assert_eq!(m.check(491), Ok(()));
    m.insert(600); // 490..536 fall out of 537..=600
    assert!(!m.contains(490) && !m.contains(520) && m.contains(553) && m.contains(600));
    assert_eq!(m.check(536), Err(MarkError::TooOld));
    assert_eq!(m.check(537), Ok(()));
}

#[test]
fn period_marks_follow_the_family_to_a_replacement_card() {
    let mut w = World::new();
    assert_eq!(
        w.code(period_credit(Program::Pkh, 8104, 1, 100)),
        Code::Approved
    );
    let o = w.one(Command::Replace {
        old_pan: pan(1),
        new_pan: pan(5),
        pvv: WRONG,
    });
    assert_eq!(o.code(), Code::Approved);
    let again = w.one(period_credit(Program::Pkh, 8104, 1, 100));
    assert!(again.replayed);
    assert_eq!(w.balances(pan(5)).pkh, 100);
    assert_eq!(
        w.code(period_credit(Program::Pkh, 8105, 1, 100)),
        Code::Approved
    );
    assert_eq!(w.balances(pan(5)).pkh, 200);
}

#[test]
fn period_marks_survive_snapshots_and_old_checkpoints_still_load() {
    let mut w = World::new();
    w.one(period_credit(Program::Bpnt, 24_312, 1, 100));
    let snap = w.ledger.snapshot();
    assert_eq!(snap.marks.len(), 1);
    assert_eq!(snap.cards[0].marks(Program::Bpnt), Marks::default());
    // The image writes what the snapshot writes, marks included.
    let bytes = postcard::to_stdvec(&snap).expect("encodes");
    assert_eq!(
        postcard::to_stdvec(&w.ledger.snapshot_image()).expect("encodes"),
        bytes
    );
    assert_eq!(
        postcard::to_stdvec(&w.ledger.snapshot_ref()).expect("encodes"),
        bytes
    );
    let back = Snapshot::decode(&bytes).expect("decodes");
    assert_eq!(back, snap);
    let mut restored = Ledger::restore(back).expect("valid");
    let mut fx = Effects::default();
    restored.apply(
        &[period_credit(Program::Bpnt, 24_312, 1, 100)],
        w.now,
        &mut fx,
    );
    assert!(fx.outcomes[0].replayed);

    // A checkpoint from before marks: the same fields without the last.
    let old = postcard::to_stdvec(&(
        &snap.config,
        &snap.counters,
        &snap.accounts,
        &snap.cards,
        &snap.keys,
    ))
    .expect("encodes");
    assert!(postcard::from_bytes::<Snapshot>(&old).is_err());
    let read = Snapshot::decode(&old).expect("old checkpoints load");
    assert!(read.marks.is_empty());
    assert_eq!(read.cards, snap.cards);
    assert!(Ledger::restore(read).is_ok());

    // Marks for a different number of cards are refused, and so are marks
    // whose window runs past the last period.
    let mut bad = snap.clone();
    bad.marks.push(Default::default());
    assert!(Ledger::restore(bad).is_err());
    let mut past = snap.clone();
    past.marks[0][0] = Marks {
        base: u16::MAX,
        bits: 1 << 63,
    };
    assert!(Ledger::restore(past).is_err());
}

#[test]
fn period_credit_knows_a_period_paid_by_a_keyed_credit_before_it() {
    let mut w = World::new();
    // A wave begun with keyed credits (the key `disburse` used before).
    let o = w.one(Command::Credit(Credit {
        request: req("BPNT:2026-03:1"),
        program: Program::Bpnt,
        card: CardRef::Family(FamilyId(1)),
        amount: 200_000 * RP,
    }));
    assert_eq!(o.code(), Code::Approved);
    let march = 2026 * 12 + 2;
    let again = w.one(period_credit(Program::Bpnt, march, 1, 200_000 * RP));
    assert!(again.replayed);
    assert!(w.fx.postings.is_empty());
    // Marked as well, and answered the same again.
    assert!(w.card(pan(1)).marks(Program::Bpnt).contains(march));
    assert!(w.one(period_credit(Program::Bpnt, march, 1, 1)).replayed);
    // Other periods and the PKH tahap key form.
    assert!(
        !w.one(period_credit(Program::Bpnt, march + 1, 1, 1))
            .replayed
    );
    w.one(Command::Credit(Credit {
        request: req("PKH:2026-T2:1"),
        program: Program::Pkh,
        card: CardRef::Family(FamilyId(1)),
        amount: 5,
    }));
    assert!(
        w.one(period_credit(Program::Pkh, 2026 * 12 + 1, 1, 5))
            .replayed
    );
    assert!(!w.one(period_credit(Program::Pkh, 2026 * 12, 1, 5)).replayed);
    assert_eq!(w.balances(pan(1)).pkh, 10);
}

#[test]
fn cards_read_from_checkpoints_written_before_the_256_byte_layout() {
    // The card and lots as checkpoints wrote them before times became u32
    // and lots a boxed slice: same fields, same order.
    #[derive(serde::Serialize)]
    struct OldLots {
        floor_end: Amount,
        floor_arrived_at: u64,
        lots: Vec<Lot>,
    }
    #[derive(serde::Serialize)]
    struct OldCard {
        status: CardStatus,
        pin_tries: u8,
        day_count: u32,
        day: u64,
        pvv: Pvv,
        day_amount: Amount,
        purchased: Amount,
        wallets: [Wallet; 2],
        last_use_at: Option<u64>,
        withdrawn: Amount,
        pan: Pan,
        family: FamilyId,
        opened_at: u64,
        first_credit_at: Option<u64>,
        clock_reset_at: u64,
        replaced_by: Option<CardId>,
        lots: [OldLots; 2],
    }
    let mut w = World::new();
    w.fund(pan(1), 300, 200);
    w.now += 3 * DAY;
    w.fund(pan(1), 0, 50);
    w.now += DAY;
    assert_eq!(
        w.code(withdrawal("W1", Program::Pkh, pan(1), 100)),
        Code::Approved
    );
    let now = w.card(pan(1)).clone();
    let old = OldCard {
        status: now.status,
        pin_tries: now.pin_tries,
        day_count: now.day_count,
        day: now.day,
        pvv: now.pvv,
        day_amount: now.day_amount,
        purchased: now.purchased,
        wallets: now.wallets,
        last_use_at: now.last_use_at.map(u64::from),
        withdrawn: now.withdrawn,
        pan: now.pan,
        family: now.family,
        opened_at: u64::from(now.opened_at),
        first_credit_at: now.first_credit_at.map(u64::from),
        clock_reset_at: u64::from(now.clock_reset_at),
        replaced_by: now.replaced_by,
        lots: now.lots.clone().map(|l| OldLots {
            floor_end: l.floor_end,
            floor_arrived_at: u64::from(l.floor_arrived_at),
            lots: l.lots.to_vec(),
        }),
    };
    let bytes = postcard::to_stdvec(&old).expect("encodes");
    assert_eq!(postcard::to_stdvec(&now).expect("encodes"), bytes);
    let back: Card = postcard::from_bytes(&bytes).expect("old cards decode");
    assert_eq!(back, now);
    assert_eq!(back.lots[1].lots.len(), 2);
    assert_eq!(back.last_use_at.map(u64::from), Some(w.now));
}
