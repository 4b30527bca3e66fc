//! `remotask run` and `remotask inspect` as a script would use them: JSON out, exit codes that
//! tell the reason, clear refusals.

use serde_json::Value;

use crate::support::{guest, remotask, text, workspace};

fn run_json(args: &[&str]) -> (Value, i32) {
    let out = remotask()
        .arg("run")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}: stdout {:?}, stderr {:?}, {}",
            text(&out.stdout),
            text(&out.stderr),
            out.status
        )
    });
    (v, out.status.code().unwrap())
}

#[test]
fn run_json_prints_one_object_with_reason_output_and_receipt() {
    let echo = guest("echo");
    let (v, code) = run_json(&[echo.to_str().unwrap(), "--input", r#"{"x":1}"#]);
    assert_eq!(code, 0);
    assert_eq!(v["reason"], "completed");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["output"], r#"{"x":1}"#);
    assert!(v["receipt"]["fuel_consumed"].as_u64().unwrap() > 0);
    assert_eq!(v["receipt"]["compile_cache"], "miss");
    assert!(v.get("trap_kind").is_none());
}

#[test]
fn run_exit_codes_tell_the_reason() {
    let hostile = guest("hostile");
    let h = hostile.to_str().unwrap();
    let cases: &[(&[&str], &str, i32)] = &[
        (&["--arg", "exit", "--arg", "4"], "guest_error", 1),
        (&["--arg", "exit", "--arg", "75"], "retryable_error", 75),
        (&["--arg", "panic", "--arg", "x"], "trap", 3),
        (&["--arg", "loop", "--fuel", "1000000"], "out_of_fuel", 4),
        (
            &["--arg", "loop", "--metering", "cpu", "--cpu-ms", "50"],
            "cpu_limit",
            4,
        ),
        (
            &["--arg", "sleep", "--arg", "60", "--max-seconds", "0.2"],
            "deadline",
            5,
        ),
        (
            &["--arg", "alloc", "--arg", "64", "--memory-mib", "16"],
            "memory_limit",
            6,
        ),
        (
            &["--arg", "write", "--arg", "5000", "--stdout-cap", "100"],
            "output_limit",
            7,
        ),
    ];
    for (args, reason, code) in cases {
        let mut all = vec![h];
        all.extend_from_slice(args);
        let (v, actual) = run_json(&all);
        assert_eq!(
            (v["reason"].as_str().unwrap(), actual),
            (*reason, *code),
            "{args:?}"
        );
    }
    let (v, _) = run_json(&[h, "--arg", "panic", "--arg", "x"]);
    assert_eq!(v["trap_kind"], "unreachable");
}

#[test]
fn run_without_json_prints_output_and_a_receipt_line() {
    let out = remotask()
        .args([
            "run",
            guest("hostile").to_str().unwrap(),
            "--arg",
            "env",
            "--env",
            "A=1",
            "--env",
            "B=two",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "A=1\nB=two\n");
    let stderr = text(&out.stderr);
    let line = stderr.lines().last().unwrap();
    assert!(
        line.starts_with("remotask: completed | exit 0 | fuel "),
        "{line}"
    );
}

#[test]
fn run_refuses_bad_flags_and_bad_modules_with_exit_2() {
    let echo = guest("echo");
    let cases: &[(&[&str], &str)] = &[
        (&["--input", "{not json"], "--input is not valid JSON"),
        (&["--env", "NOEQUALS"], "not of the form KEY=VALUE"),
        (&["--max-seconds", "0"], "max_seconds must be"),
    ];
    for (args, message) in cases {
        let out = remotask()
            .arg("run")
            .arg(&echo)
            .args(*args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(message),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let fixture = workspace().join("tests/all/fixtures/unreachable.wat");
    let out = remotask().arg("run").arg(&fixture).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("wasm text format"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_passes_input_files_through_as_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.bin");
    std::fs::write(&input, [0u8, 159, 146, 150]).unwrap();
    let (v, code) = run_json(&[
        guest("echo").to_str().unwrap(),
        "--input-file",
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert_eq!(v["output_encoding"], "base64");
    assert_eq!(v["output"], "AJ+Slg==");
}

#[test]
fn inspect_prints_the_report_or_the_refusal() {
    let out = remotask()
        .args(["inspect", guest("hostile").to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["digest"].as_str().unwrap().len(), 64);
    assert!(
        v["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["module"] == "remotask")
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, crate::support::wat("forbidden_imports")).unwrap();
    let out = remotask()
        .args(["inspect", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("env.open_socket"),
        "{}",
        text(&out.stderr)
    );
}
