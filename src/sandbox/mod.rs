//! The sandbox: the only code that imports wasmtime. It admits modules (validation, import
//! policy, compile under a time budget, on-disk artifact cache) and runs attempts, each in a
//! fresh `Store` with fuel, an epoch deadline, memory/table limits, capped stdout/stderr and a
//! per-attempt scratch directory. A guest's misbehaviour comes back as an [`AttemptReport`]
//! with one [`Reason`](crate::domain::Reason); `Err` is kept for faults of the host.
//!
//! It does not know about jobs, queues or retries: callers decide what an outcome means.

mod admission;
mod attempt;
mod cache;
mod classify;
mod cpu;
mod engine;
mod forms;
mod host;
mod output;
mod scratch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use admission::{AdmissionError, AdmissionReport, ExportInfo, ImportInfo};
pub use attempt::{AttemptReport, AttemptRequest, Receipt};

use crate::domain::{Metering, ModuleDigest};
use scratch::ScratchPool;

/// How the sandbox is set up; one per process.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Largest module accepted, in bytes.
    pub max_module_bytes: usize,
    /// Longest a compile may take before the module is refused.
    pub compile_budget: Duration,
    /// Where compiled artifacts are cached across restarts; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Where per-attempt scratch directories are made (the host's temp dir by default).
    pub scratch_dir: PathBuf,
    /// Pooling allocator slots (instances, memories, tables, stacks); 0 allocates on demand.
    pub pool_slots: u32,
    /// The largest linear memory any attempt may ask for.
    pub max_memory_bytes: u64,
    /// Table elements per table.
    pub max_table_elements: usize,
    /// Bytes of instance metadata (globals, function references) per module.
    pub max_instance_bytes: usize,
    /// Wasm call stack, in bytes; deeper recursion traps as `stack_overflow`.
    pub max_wasm_stack: usize,
    /// How often the epoch advances: the granularity of deadlines and cancellation.
    pub epoch_tick: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_module_bytes: 32 << 20,
            compile_budget: Duration::from_secs(10),
            cache_dir: None,
            scratch_dir: std::env::temp_dir(),
            pool_slots: 64,
            max_memory_bytes: crate::domain::Limits::MAX_MEMORY_BYTES,
            max_table_elements: 100_000,
            max_instance_bytes: 1 << 20,
            max_wasm_stack: 1 << 20,
            epoch_tick: Duration::from_millis(1),
        }
    }
}

/// A fault of the host: the engine cannot start, the cache directory is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot build the wasm engine: {0}")]
    Engine(String),
    #[error("cannot use the compiled-module cache at {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where a module's compiled code came from for one lookup; recorded in every receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStatus {
    /// Already compiled in this process.
    Memory,
    /// Loaded from the on-disk artifact cache.
    Disk,
    /// Compiled from the wasm bytes.
    Miss,
}

impl CacheStatus {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Memory => "memory",
            CacheStatus::Disk => "disk",
            CacheStatus::Miss => "miss",
        }
    }
}

/// A compiled, linked module ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct TaskModule {
    compiled: Arc<Compiled>,
    cache: CacheStatus,
}

struct Compiled {
    digest: ModuleDigest,
    /// The wasm bytes, to compile the form an attempt asks for when it is not made yet.
    bytes: Vec<u8>,
    forms: forms::Forms,
    report: AdmissionReport,
    /// It imports a WASI function that names a path or a directory, so its attempts get a
    /// scratch directory as `/tmp`; a module that could not reach one runs without it.
    reaches_files: bool,
}

impl TaskModule {
    pub fn digest(&self) -> ModuleDigest {
        self.compiled.digest
    }

    /// The admission report made when this module was first admitted in this process.
    pub fn report(&self) -> &AdmissionReport {
        &self.compiled.report
    }

    /// Where this handle's compiled code came from.
    pub fn cache_status(&self) -> CacheStatus {
        self.cache
    }
}

impl std::fmt::Debug for TaskModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskModule")
            .field("digest", &self.compiled.digest)
            .field("cache", &self.cache)
            .finish()
    }
}

/// Called with `(done, total)` whenever the guest reports progress.
pub type ProgressFn = Arc<dyn Fn(i64, i64) + Send + Sync>;

/// Cancels a running attempt from any thread; the attempt ends as `cancelled` within about
/// one epoch tick, also when the guest is blocked in a host call.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<CancelInner>);

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves once [`cancel`](Self::cancel) has been called.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// The shared engine, linker and module caches. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    engines: forms::Engines,
    config: SandboxConfig,
    memory: Mutex<HashMap<ModuleDigest, Arc<Compiled>>>,
    scratch: ScratchPool,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds the engine of the fuel form (the CPU form's on first use), starts its epoch
    /// ticker and opens its artifact cache.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let engines = forms::Engines::new(&config)?;
        let scratch = ScratchPool::new(config.scratch_dir.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                engines,
                config,
                memory: Mutex::default(),
                scratch,
            }),
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Admits `bytes` as a task module: checks it, compiles it (or loads its cached
    /// artifact) and links it. A refusal names what is wrong.
    pub fn admit(&self, bytes: &[u8]) -> Result<TaskModule, AdmissionError> {
        let digest = ModuleDigest::of(bytes);
        if let Some(compiled) = self.memory_hit(&digest) {
            return Ok(TaskModule {
                compiled,
                cache: CacheStatus::Memory,
            });
        }
        admission::admit(self, digest, bytes)
    }

    /// The module with `digest`, loading its bytes with `load` only if it is not compiled in
    /// this process yet. The bytes must hash to `digest`.
    pub fn module(
        &self,
        digest: ModuleDigest,
        load: impl FnOnce() -> std::io::Result<Vec<u8>>,
    ) -> Result<TaskModule, AdmissionError> {
        if let Some(compiled) = self.memory_hit(&digest) {
            return Ok(TaskModule {
                compiled,
                cache: CacheStatus::Memory,
            });
        }
        let bytes = load().map_err(|e| AdmissionError::Unreadable(e.to_string()))?;
        let actual = ModuleDigest::of(&bytes);
        if actual != digest {
            return Err(AdmissionError::DigestMismatch {
                expected: digest,
                actual,
            });
        }
        admission::admit(self, digest, &bytes)
    }

    /// Compiles (or loads from the artifact cache) `module` in the form `metering` runs it in,
    /// ahead of its first attempt; why it could not.
    pub fn prepare(&self, module: &TaskModule, metering: Metering) -> Result<(), String> {
        forms::form(self, &module.compiled, metering).map(|_| ())
    }

    /// Runs one attempt to its end on the current async runtime.
    pub async fn run(&self, module: &TaskModule, request: AttemptRequest) -> AttemptReport {
        attempt::run(self, module, request).await
    }

    /// Runs one attempt to its end on this thread (a reused current-thread runtime).
    pub fn run_blocking(&self, module: &TaskModule, request: AttemptRequest) -> AttemptReport {
        attempt::run_blocking(self, module, request)
    }

    fn memory_hit(&self, digest: &ModuleDigest) -> Option<Arc<Compiled>> {
        self.inner
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned()
    }

    fn remember(&self, compiled: Compiled) -> Arc<Compiled> {
        let compiled = Arc::new(compiled);
        let mut memory = self.inner.memory.lock().unwrap_or_else(|p| p.into_inner());
        memory.insert(compiled.digest, compiled.clone());
        compiled
    }
}

#[cfg(test)]
mod tests {
    use super::CacheStatus;

    #[test]
    fn cache_status_names_are_the_serde_names() {
        for status in [CacheStatus::Memory, CacheStatus::Disk, CacheStatus::Miss] {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
    }
}
