//! `progress`: works through `steps` steps and reports each one with
//! `remotask_guest::progress(done, total)`; the job shows it while running.
//! Input `{"steps": 5}`, output `{"steps": 5}`.
//!
//! Run it:
//! `cargo build --release --target wasm32-wasip1 -p progress && cargo run -- run target/wasm32-wasip1/release/progress.wasm --input '{"steps": 5}'`

use remotask_guest::{TaskError, log, progress};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    steps: u64,
}

#[derive(Serialize)]
struct Output {
    steps: u64,
}

fn task(input: Input) -> Result<Output, TaskError> {
    let mut acc: u64 = 0;
    for step in 1..=input.steps {
        for i in 0..100_000u64 {
            acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
        }
        log(format_args!("step {step} of {}", input.steps));
        progress(step, input.steps);
    }
    Ok(Output { steps: input.steps })
}

remotask_guest::task!(task);
