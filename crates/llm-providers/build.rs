//! Writes the ordinary tokens of OpenAI's `o200k_base` and `cl100k_base` encodings into
//! `OUT_DIR` in a compact form the crate embeds (`src/tokens.rs` reads it):
//! `<name>.bytes`, every token's bytes one after another in rank order, and `<name>.ends`,
//! where each token ends in it (little-endian `u32`). tiktoken-rs is the source of truth for
//! the vocabularies; it runs here, at build time, so that the server never holds its tables
//! (about 50 MB for `o200k_base`).

use std::collections::HashSet;
use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let out = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    let out = Path::new(&out);
    let o200k = tiktoken_rs::o200k_base().expect("tiktoken-rs loads o200k_base");
    write_vocabulary(out, "o200k_base", &o200k);
    let cl100k = tiktoken_rs::cl100k_base().expect("tiktoken-rs loads cl100k_base");
    write_vocabulary(out, "cl100k_base", &cl100k);
}

/// Ordinary tokens are ranks `0..n` without a gap; special tokens come after them and are
/// never produced by counting ordinary text, so they are left out.
fn write_vocabulary(out: &Path, name: &str, bpe: &tiktoken_rs::CoreBPE) {
    let special: HashSet<&[u8]> = bpe
        .special_tokens()
        .into_iter()
        .map(str::as_bytes)
        .collect();
    let ordinary = |rank: u32| {
        bpe.decode_bytes(&[rank])
            .ok()
            .filter(|token| !special.contains(token.as_slice()))
    };
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    let mut rank = 0;
    while let Some(token) = ordinary(rank) {
        bytes.extend_from_slice(&token);
        let end = u32::try_from(bytes.len()).expect("a vocabulary is under 4 GiB");
        ends.extend_from_slice(&end.to_le_bytes());
        rank += 1;
    }
    assert!(rank > 50_000, "{name}: only {rank} ordinary tokens");
    // Nothing ordinary may follow the first gap, or ranks would be lost.
    for later in rank..rank + 1_000 {
        assert!(
            ordinary(later).is_none(),
            "{name}: ordinary token {later} after a gap"
        );
    }
    std::fs::write(out.join(format!("{name}.bytes")), bytes).expect("OUT_DIR is writable");
    std::fs::write(out.join(format!("{name}.ends")), ends).expect("OUT_DIR is writable");
}
