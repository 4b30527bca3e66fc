//! A guest run in bare wasmtime: the same wasmtime version and engine settings as remotask's
//! (wasm features, pooling allocator, stack size) but no fuel and no limits, and epoch
//! interruption only when asked (its checks compiled in, a ticker every millisecond, a
//! callback that only continues); a fresh store and WASI context per run, stdin the input,
//! stdout kept in memory. The baseline the sandbox benchmarks compare remotask's meterings
//! with.

use std::time::{Duration, Instant};

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store,
};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

pub(crate) struct Bare {
    epoch: bool,
    engine: Engine,
    pre: InstancePre<WasiP1Ctx>,
    runtime: tokio::runtime::Runtime,
}

impl Bare {
    pub(crate) fn new(bytes: &[u8], epoch: bool) -> Self {
        let mut config = Config::new();
        config
            .epoch_interruption(epoch)
            .wasm_simd(true)
            .wasm_relaxed_simd(true)
            .wasm_bulk_memory(true)
            .wasm_multi_value(true)
            .wasm_tail_call(true)
            .max_wasm_stack(1 << 20)
            .async_stack_size(2 << 20);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(64)
            .total_memories(64)
            .total_tables(64)
            .total_stacks(64)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(4 << 30)
            .table_elements(100_000)
            .max_core_instance_size(1 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).expect("engine");
        if epoch {
            let weak = engine.weak();
            std::thread::spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
        let module = Module::from_binary(&engine, bytes).expect("module compiles");
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| s).expect("wasi");
        let pre = linker.instantiate_pre(&module).expect("links");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            epoch,
            engine,
            pre,
            runtime,
        }
    }

    /// One run of `_start` with `input` on stdin, from a fresh store: how long it took.
    pub(crate) fn run(&self, name: &str, input: &[u8]) -> Duration {
        let started = Instant::now();
        let stdout = MemoryOutputPipe::new(64 << 20);
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(input.to_vec()))
            .stdout(stdout.clone())
            .args(&[name])
            .build_p1();
        let mut store = Store::new(&self.engine, wasi);
        if self.epoch {
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Continue(1)));
        }
        self.runtime.block_on(async {
            let instance = self
                .pre
                .instantiate_async(&mut store)
                .await
                .expect("instantiates");
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .expect("_start");
            if let Err(e) = start.call_async(&mut store, ()).await {
                let exited = e
                    .downcast_ref::<wasmtime_wasi::I32Exit>()
                    .is_some_and(|x| x.0 == 0);
                assert!(exited, "the guest failed in bare wasmtime: {e:#}");
            }
        });
        let took = started.elapsed();
        assert!(!stdout.contents().is_empty(), "the guest wrote its output");
        took
    }
}
