//! How a wasmtime `Engine` is configured, and the epoch ticker thread that drives every
//! deadline (one engine per compiled form: `forms.rs`).
//! This file decides which wasm features guests may use; it does not run guests.

use std::thread;
use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, EngineWeak, InstanceAllocationStrategy, PoolingAllocationConfig,
    WasmBacktraceDetails,
};

use super::{SandboxConfig, SandboxError};

/// Builds an engine, with fuel metering compiled in or not (`fuel`).
///
/// Wasm features: on are the ones real toolchains emit for `wasm32-wasip1` (SIMD, bulk memory,
/// reference types for funcref tables, multi-value, sign extension, mutable globals, tail
/// calls). Off are the ones that would let a guest slip past the memory limiter or that we do
/// not run: threads and shared memory (shared memories ignore the limiter), multi-memory
/// (limits are per memory), memory64, custom page sizes and the component model. Exceptions,
/// GC and typed function references are off because wasmtime is built without its `gc`
/// feature, and threads because it is built without `threads`.
pub(super) fn build(config: &SandboxConfig, fuel: bool) -> Result<Engine, SandboxError> {
    let mut c = Config::new();
    c.consume_fuel(fuel)
        .epoch_interruption(true)
        .parallel_compilation(true)
        .wasm_multi_memory(false)
        .wasm_memory64(false)
        .wasm_gc(false)
        .wasm_stack_switching(false)
        .wasm_component_model(false)
        .wasm_custom_page_sizes(false)
        .wasm_wide_arithmetic(false)
        .wasm_simd(true)
        .wasm_relaxed_simd(true)
        .wasm_bulk_memory(true)
        .wasm_multi_value(true)
        .wasm_tail_call(true)
        .wasm_extended_const(true)
        // A trap's frames name their file and line when the module carries DWARF (the
        // debug sections are kept with the compiled code; the code itself is the same).
        .wasm_backtrace_details(WasmBacktraceDetails::Enable)
        .max_wasm_stack(config.max_wasm_stack)
        .async_stack_size(config.max_wasm_stack + (1 << 20));
    if config.pool_slots > 0 {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(config.pool_slots)
            .total_memories(config.pool_slots)
            .total_tables(config.pool_slots)
            .total_stacks(config.pool_slots)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(config.max_memory_bytes as usize)
            .table_elements(config.max_table_elements)
            .max_core_instance_size(config.max_instance_bytes)
            .max_unused_warm_slots(config.pool_slots.min(64))
            // Reset only the pages a guest dirtied (PAGEMAP_SCAN, Linux 6.7+) within the first
            // 2 MiB, keeping them resident; the rest is returned with madvise.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&c).map_err(|e| SandboxError::Engine(format!("{e:#}")))
}

/// Starts the thread that advances the engine's epoch every `tick`. It holds the engine
/// weakly and ends by itself once the last `Engine` clone is dropped.
pub(super) fn start_ticker(engine: &Engine, tick: Duration) -> Result<(), SandboxError> {
    let weak: EngineWeak = engine.weak();
    thread::Builder::new()
        .name("remotask-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(tick);
            }
        })
        .map(|_| ())
        .map_err(|e| SandboxError::Engine(format!("cannot start the epoch ticker: {e}")))
}
