//! The guests the benchmarks run, built once per bench run in release mode for wasm32-wasip1
//! (a separate target directory, so the host build is not invalidated).

use std::path::PathBuf;
use std::process::Command;

/// Builds the example or test guests `names` (`echo`, `fib`, `hostile`, ...); the directory
/// that holds `<name>.wasm` for each.
pub(crate) fn build(names: &[&str]) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("guests");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-wasip1", "--quiet"])
        .env("CARGO_TARGET_DIR", &target);
    for name in names {
        cargo.args(["-p", name]);
    }
    let status = cargo.status().expect("cargo runs");
    assert!(status.success(), "building the guests {names:?} failed");
    target.join("wasm32-wasip1/release")
}

/// The echo guest's bytes.
#[allow(
    dead_code,
    reason = "not every bench that includes this file runs echo alone"
)]
pub(crate) fn echo() -> Vec<u8> {
    std::fs::read(build(&["echo"]).join("echo.wasm")).expect("echo.wasm")
}
