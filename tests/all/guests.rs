//! The example guests and the guest SDK's contract, end to end in the sandbox; and a C guest
//! built with clang and wasi-libc, which shows the contract needs no SDK.

use remotask::domain::{Limits, Reason};
use serde_json::{Value, json};

use crate::support::{attempt, c_guest, guest_bytes, text};

fn run_json(guest: &str, input: Value) -> (Reason, Option<Value>, String) {
    let r = attempt(
        &guest_bytes(guest),
        &[],
        input.to_string().as_bytes(),
        Limits::default(),
    );
    (
        r.reason,
        serde_json::from_slice(&r.output).ok(),
        r.message.unwrap_or_default(),
    )
}

#[test]
fn fib_computes_with_the_sdk() {
    let (reason, out, _) = run_json("fib", json!({"n": 20}));
    assert_eq!(reason, Reason::Completed);
    assert_eq!(out.unwrap(), json!({"n": 20, "fib": 6765}));
}

#[test]
fn word_count_counts() {
    let (reason, out, _) = run_json("word-count", json!({"text": "a b a\nc a b"}));
    assert_eq!(reason, Reason::Completed);
    let out = out.unwrap();
    assert_eq!(
        (out["words"].clone(), out["lines"].clone()),
        (json!(6), json!(2))
    );
    assert_eq!(out["top"][0], json!(["a", 3]));
}

#[test]
fn flaky_asks_for_a_retry_when_its_input_says_so() {
    let (reason, _, message) = run_json("flaky", json!({"fail": true, "message": "database busy"}));
    assert_eq!(reason, Reason::RetryableError);
    assert!(message.contains("database busy"), "{message}");
    let (reason, out, _) = run_json("flaky", json!({"fail": false}));
    assert_eq!(
        (reason, out.unwrap()),
        (Reason::Completed, json!({"ok": true}))
    );
}

#[test]
fn invalid_input_is_a_guest_error_naming_the_problem() {
    let r = attempt(
        &guest_bytes("fib"),
        &[],
        b"{\"n\": \"many\"}",
        Limits::default(),
    );
    assert_eq!(r.reason, Reason::GuestError);
    assert!(r.message.unwrap().contains("invalid input"));
}

#[test]
fn progress_example_reports_every_step() {
    let (reason, out, _) = run_json("progress", json!({"steps": 3}));
    assert_eq!(
        (reason, out.unwrap()),
        (Reason::Completed, json!({"steps": 3}))
    );
}

#[test]
fn a_c_guest_without_the_sdk_follows_the_same_contract() {
    let bytes = std::fs::read(c_guest()).unwrap();
    let r = attempt(&bytes, &[], b"plain bytes", Limits::default());
    assert_eq!(r.reason, Reason::Completed, "{}", text(&r.stderr));
    assert_eq!(r.output, b"plain bytes");
    let r = attempt(&bytes, &[], b"", Limits::default());
    assert_eq!((r.reason, r.exit_code), (Reason::GuestError, Some(1)));
    assert_eq!(r.message.as_deref(), Some("error: empty input"));
}
