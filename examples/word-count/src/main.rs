//! `word-count`: counts words, lines and characters of a text and lists the ten most
//! frequent words (by count, then alphabetically). A typed JSON task.
//! Input `{"text": "..."}`, output `{"words": N, "lines": N, "chars": N, "top": [["word", N], ...]}`.
//!
//! Run it:
//! `cargo build --release --target wasm32-wasip1 -p word-count && cargo run -- run target/wasm32-wasip1/release/word-count.wasm --input '{"text": "a b a"}'`

use std::collections::HashMap;

use remotask_guest::TaskError;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[derive(Serialize)]
struct Output {
    words: usize,
    lines: usize,
    chars: usize,
    top: Vec<(String, usize)>,
}

fn task(input: Input) -> Result<Output, TaskError> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut words = 0;
    for word in input.text.split_whitespace() {
        let word: String = word
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        if word.is_empty() {
            continue;
        }
        words += 1;
        *counts.entry(word).or_default() += 1;
    }
    let mut top: Vec<(String, usize)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(10);
    Ok(Output {
        words,
        lines: input.text.lines().count(),
        chars: input.text.chars().count(),
        top,
    })
}

remotask_guest::task!(task);
