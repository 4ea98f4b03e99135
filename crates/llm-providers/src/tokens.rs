//! Counts the tokens of OpenAI input exactly as tiktoken does, from a compact copy of its
//! vocabularies.
//!
//! tiktoken-rs keeps a vocabulary as three tables with a heap allocation per token, about
//! 50 MB for `o200k_base`, for the life of the process. Counting needs only each token's
//! rank: here the tokens' bytes stay in the binary (`build.rs` writes them from tiktoken-rs
//! itself) and the one table built at run time maps slices of those bytes to ranks: for
//! `o200k_base`, 262,144 buckets of 24 bytes (6.5 MB) beside 2 MB of embedded bytes. The
//! tests check every count against tiktoken-rs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::LazyLock;

use rustc_hash::FxHashMap;

type Rank = u32;

/// The encodings the gateway counts with. OpenAI's older completion encodings (`p50k_base`,
/// `r50k_base`, GPT-2's) belong to no chat model, so their models are not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    /// The encoding tiktoken uses for an OpenAI model name.
    pub fn for_model(upstream: &str) -> Option<Self> {
        use tiktoken_rs::tokenizer::Tokenizer;
        match tiktoken_rs::tokenizer::get_tokenizer(upstream)? {
            // Harmony adds special tokens only; ordinary text encodes as in o200k_base.
            Tokenizer::O200kBase | Tokenizer::O200kHarmony => Some(Self::O200kBase),
            Tokenizer::Cl100kBase => Some(Self::Cl100kBase),
            Tokenizer::P50kBase | Tokenizer::P50kEdit | Tokenizer::R50kBase | Tokenizer::Gpt2 => {
                None
            }
        }
    }

    /// The vocabulary, built on first use and kept.
    pub fn vocabulary(self) -> &'static Vocabulary {
        static O200K_BASE: LazyLock<Vocabulary> = LazyLock::new(|| {
            Vocabulary::new(
                include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.bytes")),
                include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.ends")),
                tiktoken_rs::O200K_BASE_PAT_STR,
            )
        });
        static CL100K_BASE: LazyLock<Vocabulary> = LazyLock::new(|| {
            Vocabulary::new(
                include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_base.bytes")),
                include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_base.ends")),
                CL100K_BASE_PATTERN,
            )
        });
        match self {
            Self::O200kBase => &O200K_BASE,
            Self::Cl100kBase => &CL100K_BASE,
        }
    }
}

/// How `cl100k_base` splits text before merging (tiktoken's, which tiktoken-rs does not
/// export; the tests would fail on any difference).
const CL100K_BASE_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// One encoding's ordinary tokens and the pattern that splits text into the pieces they are
/// merged within.
pub struct Vocabulary {
    ranks: FxHashMap<&'static [u8], Rank>,
    pieces: fancy_regex::Regex,
}

impl std::fmt::Debug for Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocabulary")
            .field("tokens", &self.ranks.len())
            .finish_non_exhaustive()
    }
}

impl Vocabulary {
    /// `bytes` holds every token in rank order; `ends` where each ends, as little-endian u32.
    fn new(bytes: &'static [u8], ends: &'static [u8], pattern: &str) -> Self {
        let mut ranks =
            FxHashMap::with_capacity_and_hasher(ends.len() / 4, rustc_hash::FxBuildHasher);
        let mut start = 0;
        for (rank, end) in ends.chunks_exact(4).enumerate() {
            let end = u32::from_le_bytes(end.try_into().expect("chunks of four bytes"));
            let end = usize::try_from(end).expect("a u32 fits in usize");
            let rank = Rank::try_from(rank).expect("ranks fit in u32");
            ranks.insert(&bytes[start..end], rank);
            start = end;
        }
        let pieces = fancy_regex::Regex::new(pattern).expect("tiktoken's pattern compiles");
        Self { ranks, pieces }
    }

    /// How many tokens `text` encodes to: the length of tiktoken's `encode_ordinary(text)`.
    /// `None` if the pattern could not split it (fancy-regex's backtracking limit).
    pub fn count(&self, text: &str) -> Option<usize> {
        let mut count = 0;
        for piece in self.pieces.find_iter(text) {
            let piece = piece.ok()?.as_str().as_bytes();
            count += if self.ranks.contains_key(piece) {
                1
            } else {
                self.merged_parts(piece)
            };
        }
        Some(count)
    }

    /// How many tokens byte-pair merging leaves of `piece`. Starting from single bytes, the
    /// adjacent pair whose concatenation is the lowest-ranked token (the leftmost on a tie)
    /// becomes one part, until no adjacent pair is a token. Pairs wait in a heap and are
    /// checked when taken out, so a long piece costs O(n log n), not O(n²).
    fn merged_parts(&self, piece: &[u8]) -> usize {
        let len = piece.len();
        // For each part, by its first byte: where it ends (the next part's start) and where
        // the part before it starts. Only parts still standing are read.
        let mut end_of: Vec<usize> = (1..=len).collect();
        let mut start_before: Vec<Option<usize>> = (0..len).map(|i| i.checked_sub(1)).collect();
        let mut standing = vec![true; len];
        let mut pairs = BinaryHeap::new();
        let offer = |pairs: &mut BinaryHeap<_>, start: usize, end: usize| {
            if let Some(&rank) = self.ranks.get(&piece[start..end]) {
                pairs.push(Reverse((rank, start, end)));
            }
        };
        for start in 0..len.saturating_sub(1) {
            offer(&mut pairs, start, start + 2);
        }
        let mut parts = len;
        while let Some(Reverse((_, start, end))) = pairs.pop() {
            // Taken only if `start..end` is still exactly two standing parts.
            let middle = end_of[start];
            if !standing[start] || middle >= len || end_of[middle] != end {
                continue;
            }
            standing[middle] = false;
            end_of[start] = end;
            if end < len {
                start_before[end] = Some(start);
            }
            parts -= 1;
            if let Some(before) = start_before[start] {
                offer(&mut pairs, before, end);
            }
            if end < len {
                offer(&mut pairs, start, end_of[end]);
            }
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;

    use super::*;

    static TIKTOKEN_O200K: LazyLock<tiktoken_rs::CoreBPE> =
        LazyLock::new(|| tiktoken_rs::o200k_base().unwrap());
    static TIKTOKEN_CL100K: LazyLock<tiktoken_rs::CoreBPE> =
        LazyLock::new(|| tiktoken_rs::cl100k_base().unwrap());

    fn assert_same_count(text: &str) {
        for (encoding, reference) in [
            (Encoding::O200kBase, &*TIKTOKEN_O200K),
            (Encoding::Cl100kBase, &*TIKTOKEN_CL100K),
        ] {
            assert_eq!(
                encoding.vocabulary().count(text),
                Some(reference.encode_ordinary(text).len()),
                "{encoding:?} on {text:?}"
            );
        }
    }

    #[test]
    fn the_vocabularies_hold_every_ordinary_token() {
        // Both encodings begin with the single printable bytes: `!` is rank 0.
        for (encoding, tokens) in [
            (Encoding::O200kBase, 199_998),
            (Encoding::Cl100kBase, 100_256),
        ] {
            let vocabulary = encoding.vocabulary();
            assert_eq!(vocabulary.ranks.len(), tokens, "{encoding:?}");
            assert_eq!(vocabulary.ranks.get(&b"!"[..]), Some(&0), "{encoding:?}");
        }
    }

    #[test]
    fn counts_match_tiktoken_on_text_people_send() {
        let texts = [
            "",
            "hello world",
            "Summarise the following meeting notes in three bullet points, please.",
            "I'm sure they'll say it's fine; we've done this before, haven't we? DON'T PANIC.",
            "fn main() {\n    let total: u64 = (1..=10).map(|n| n * n).sum();\n    println!(\"{total}\");\n}\n",
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi!"}],"max_tokens":64}"#,
            "Numbers: 3.14159, 1,000,000 and 2026-12-06T19:34:10Z; phone +1 (555) 010-9999.",
            "日本語のテキストも数えます。中文也一样。한국어도요.",
            "Émile a répondu « déjà vu » à l’instant — naïve façade, œuvre, Straße.",
            "مرحبا بالعالم — שלום עולם — Привет, мир!",
            "emoji 🙂🙂🙂 👩‍👩‍👧‍👦 🇫🇷 ✅❌",
            "tabs\tand\t\ttrailing spaces   \n\n\n   \r\n  end  ",
            "https://example.com/a/b?c=d&e=f#g path/to/file.rs::module//comment",
        ];
        for text in texts {
            assert_same_count(text);
        }
    }

    #[test]
    fn long_pieces_are_merged_as_tiktoken_merges_them() {
        // Pieces far longer than any token take the many-merges path.
        for text in [
            "a".repeat(5_000),
            " ".repeat(3_000),
            "\n".repeat(700),
            "ab1".repeat(1_500),
            "🙂".repeat(600),
            "Pneumonoultramicroscopicsilicovolcanoconiosis".repeat(200),
            "-=".repeat(2_000),
        ] {
            assert_same_count(&text);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn counts_match_tiktoken_on_any_text(text in any::<String>()) {
            assert_same_count(&text);
        }

        #[test]
        fn counts_match_tiktoken_on_word_like_text(
            text in "[a-zA-Z0-9 '\n.,!?éß中文🙂-]{0,400}"
        ) {
            assert_same_count(&text);
        }
    }
}
