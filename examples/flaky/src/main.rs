//! `flaky`: a task whose failure is decided by its input, to see retries at work.
//! `{"fail": true, "message": "database busy"}` asks for a retry (exit 75, `retryable_error`);
//! `{"fail": false}` completes with `{"ok": true}`.
//!
//! Run it:
//! `cargo build --release --target wasm32-wasip1 -p flaky && cargo run -- run target/wasm32-wasip1/release/flaky.wasm --input '{"fail": true}'`
//! (exit code 75: the job would be retried).

use remotask_guest::TaskError;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    fail: bool,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Serialize)]
struct Output {
    ok: bool,
}

fn task(input: Input) -> Result<Output, TaskError> {
    if input.fail {
        let message = input.message.unwrap_or_else(|| "asked to fail".to_owned());
        return Err(TaskError::retry(message));
    }
    Ok(Output { ok: true })
}

remotask_guest::task!(task);
