//! `fib`: the n-th Fibonacci number by naive recursion, compute-heavy on purpose (the
//! fuel-overhead benchmark runs the same function natively and in the sandbox).
//! Input `{"n": 30}`, output `{"n": 30, "fib": 832040}`.
//!
//! Run it:
//! `cargo build --release --target wasm32-wasip1 -p fib && cargo run -- run target/wasm32-wasip1/release/fib.wasm --input '{"n": 30}'`
//! Try `--fuel 1000000` to see it end as `out_of_fuel`.

use remotask_guest::TaskError;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    n: u32,
}

#[derive(Serialize)]
struct Output {
    n: u32,
    fib: u64,
}

#[inline(never)]
fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

fn task(input: Input) -> Result<Output, TaskError> {
    if input.n > 93 {
        return Err(TaskError::fatal(format!(
            "n must be at most 93 (fib(94) overflows u64), got {}",
            input.n
        )));
    }
    Ok(Output {
        n: input.n,
        fib: fib(u64::from(input.n)),
    })
}

remotask_guest::task!(task);
