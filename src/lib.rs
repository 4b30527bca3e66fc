//! remotask runs untrusted WebAssembly task modules as background jobs, each attempt in a
//! fresh wasmtime sandbox with hard limits on fuel, wall clock, memory and output.
//!
//! The crate is layered (`ARCHITECTURE.md` has the table of which module may use which, and
//! a test checks it): `domain` holds the plain data and rules every layer shares; `sandbox`
//! alone knows wasmtime; `store` keeps jobs; `worker` runs them against its own seam
//! (`worker::Source`); `service` holds the use-cases and the in-process source; `http` and
//! `cli` face users.

pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod worker;

/// mimalloc for every allocation of the process, SQLite's included (the `override` feature
/// replaces `malloc` and `free`): glibc's allocator was 12% of the SQLite writer's time, much
/// of it consolidating and unlinking free chunks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
