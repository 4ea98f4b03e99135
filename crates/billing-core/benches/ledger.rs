//! CPU cost of the ledger's decision as an account's live grants grow.

use std::hint::black_box;

use billing_core::ids::{AccountId, PrefixedId, Ulid};
use billing_core::ledger::{
    AccountBook, GrantSource, IdempotencyKey, LedgerCommand, LedgerPolicy, LedgerRequest, decide,
};
use billing_core::testing::SequentialIds;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

fn book_with_grants(n: u64) -> AccountBook {
    let ids = SequentialIds::default();
    let mut book = AccountBook::new(AccountId::from_ulid(Ulid(1)));
    for i in 0..n {
        let command = LedgerCommand::Grant {
            amount: 1_000,
            source: GrantSource::Purchase,
            priority: i32::try_from(i % 3).unwrap_or(0),
            expires_at: Some(NOW + Duration::days(i64::try_from(i).unwrap_or(0) + 1)),
            rollover_cap: 0,
            rollover_until: None,
            reference: None,
            memo: None,
        };
        let request = LedgerRequest {
            account: book.account().clone(),
            key: IdempotencyKey::new(format!("g{i}")).unwrap(),
            command,
            policy: LedgerPolicy::default(),
            intent: None,
        };
        book.execute(&request, NOW, &ids);
    }
    book
}

fn decide_debit(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide debit");
    for grants in [1u64, 10, 100, 1000] {
        let book = book_with_grants(grants);
        // A debit that burns across several grants.
        let command = LedgerCommand::Debit {
            amount: 2_500,
            reference: None,
            memo: None,
        };
        let view = book.view(&command);
        let ids = SequentialIds::default();
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{grants} grants")),
            &view,
            |b, view| {
                b.iter(|| {
                    decide(
                        black_box(view),
                        black_box(&command),
                        LedgerPolicy::default(),
                        NOW,
                        &ids,
                    )
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, decide_debit);
criterion_main!(benches);
