//! `echo`: returns its input unchanged, as raw bytes (no JSON). The smallest task there is,
//! and the one the per-attempt benchmark runs.
//!
//! Run it:
//! `cargo build --release --target wasm32-wasip1 -p echo && cargo run -- run target/wasm32-wasip1/release/echo.wasm --input '{"hello":"world"}'`

fn main() {
    remotask_guest::run_raw(Ok)
}
