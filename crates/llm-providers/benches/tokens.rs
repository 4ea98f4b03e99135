//! Counting a prompt's tokens: Tollgate's compact vocabulary against tiktoken-rs, the
//! reference it must agree with, on the same text in the same run.

use criterion::{Criterion, criterion_group, criterion_main};
use llm_providers::tokens::Encoding;

fn prompt() -> String {
    let paragraph = "Summarise the meeting notes below in three bullet points. We agreed to \
        ship the billing release on 2026-12-14, pending the load test (p99 < 20 ms at 1,000 \
        req/s); Émile owns the rollback plan, and the 日本語 support ticket #4521 waits. ";
    let code = "fn total(xs: &[u64]) -> u64 {\n    xs.iter().map(|x| x * x).sum()\n}\n";
    // About 4 KB: a typical chat turn with some history.
    [paragraph, code].concat().repeat(12)
}

fn count(c: &mut Criterion) {
    let text = prompt();
    let ours = Encoding::O200kBase.vocabulary();
    let tiktoken = tiktoken_rs::o200k_base().expect("tiktoken-rs loads o200k_base");
    assert_eq!(
        ours.count(&text),
        Some(tiktoken.encode_ordinary(&text).len())
    );
    let mut group = c.benchmark_group("count o200k_base, 4 KB prompt");
    group.bench_function("tollgate", |b| b.iter(|| ours.count(&text)));
    group.bench_function("tiktoken-rs", |b| {
        b.iter(|| tiktoken.encode_ordinary(&text).len())
    });
    group.finish();
}

criterion_group!(benches, count);
criterion_main!(benches);
