//! One attempt: a fresh `Store` with fuel, an epoch deadline, the memory limiter, a WASI
//! preview1 context (stdin = input, capped stdout/stderr, argv, only the given env vars, one
//! empty scratch directory as `/tmp` if the module could reach it) and the
//! `remotask.progress` import; randomness and clocks recorded or replayed (`host`); then
//! `_start`, raced against the wall-clock deadline and cancellation. Nothing survives the attempt but its
//! report. How the end is read is decided in `classify`, not here.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmtime::{Caller, Engine, InstancePre, Linker, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::classify::{self, End, Phase, Stop};
use super::cpu::{CpuMeter, Metered};
use super::forms;
use super::host::HostInputs;
use super::output::{CappedPipe, Overflow};
use super::{CacheStatus, CancelToken, ProgressFn, Sandbox, SandboxError, TaskModule};
use crate::domain::{Limits, Metering, Reason, Recording, TrapKind};

/// Everything one attempt needs besides the module.
#[derive(Clone, Default)]
pub struct AttemptRequest {
    /// `argv[0]` of the guest.
    pub task_name: String,
    /// The guest's stdin.
    pub input: Vec<u8>,
    /// `argv[1..]` of the guest.
    pub args: Vec<String>,
    /// The guest's whole environment.
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    /// Cancels the attempt from another thread.
    pub cancel: CancelToken,
    /// Receives the guest's `remotask.progress(done, total)` calls.
    pub progress: Option<ProgressFn>,
    /// Replays this recording (the seed and the clock values an earlier attempt was given);
    /// `None` records a fresh one.
    pub replay: Option<Recording>,
}

impl std::fmt::Debug for AttemptRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptRequest")
            .field("task_name", &self.task_name)
            .field("input_bytes", &self.input.len())
            .field("args", &self.args)
            .field("env", &self.env)
            .field("limits", &self.limits)
            .field("replay", &self.replay.is_some())
            .finish_non_exhaustive()
    }
}

/// How an attempt ended, what it wrote and what it cost.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub reason: Reason,
    /// Set when `reason` is `trap`.
    pub trap_kind: Option<TrapKind>,
    /// The guest's exit code, when it exited (0 when `_start` returned).
    pub exit_code: Option<i32>,
    /// A one-line explanation, e.g. the guest's last stderr line for `guest_error`.
    pub message: Option<String>,
    /// stdout: the result.
    pub output: Vec<u8>,
    /// stderr: the log, cut at its cap.
    pub stderr: Vec<u8>,
    pub stderr_truncated: bool,
    pub receipt: Receipt,
    /// The seed and the clock values the guest was given (in a replay, the recorded ones it
    /// read); `None` when the guest never ran.
    pub recording: Option<Recording>,
}

impl AttemptReport {
    /// An attempt that a fault of the host ended (`host_error`) before the guest ran: no
    /// output, no cost; `cache` says how its module was found.
    pub fn host_error(message: impl Into<String>, cache: CacheStatus) -> Self {
        AttemptReport {
            reason: Reason::HostError,
            trap_kind: None,
            exit_code: None,
            message: Some(message.into()),
            output: Vec::new(),
            stderr: Vec::new(),
            stderr_truncated: false,
            receipt: Receipt {
                fuel_consumed: None,
                cpu_us: 0,
                peak_memory_bytes: 0,
                wall_us: 0,
                instantiate_us: 0,
                compile_cache: cache,
                stdout_bytes: 0,
                stderr_bytes: 0,
            },
            recording: None,
        }
    }
}

/// What an attempt cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// Fuel consumed; `None` when the attempt ran without fuel metering.
    pub fuel_consumed: Option<u64>,
    /// CPU time the guest's thread spent on the attempt (instantiation included), in
    /// microseconds; time suspended in a sleep is not counted. 0 in a report from a worker
    /// that did not measure it.
    #[serde(default)]
    pub cpu_us: u64,
    /// The largest the guest's linear memory grew to, in bytes.
    pub peak_memory_bytes: u64,
    /// From the start of the attempt to its end, in microseconds.
    pub wall_us: u64,
    /// Creating the store and instantiating (start function included), in microseconds.
    pub instantiate_us: u64,
    pub compile_cache: CacheStatus,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

/// The store data of one attempt.
pub(super) struct AttemptState {
    wasi: WasiP1Ctx,
    limiter: GuestLimiter,
    progress: Option<ProgressFn>,
    cancel: CancelToken,
    deadline: Instant,
    /// The CPU-time budget, checked every epoch tick against `cpu`.
    cpu_budget: Option<Duration>,
    cpu: Arc<CpuMeter>,
    stop: Option<Stop>,
}

/// Enforces the memory and table limits and remembers a denial, so a refused `memory.grow`
/// ends the attempt as `memory_limit` instead of handing the guest -1.
pub(super) struct GuestLimiter {
    memory_cap: u64,
    pub(super) peak_memory: u64,
    pub(super) denied: Option<String>,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_cap {
            let why = format!(
                "memory would grow from {current} to {desired} bytes, over the limit of {} bytes",
                self.memory_cap
            );
            self.denied = Some(why.clone());
            return Err(wasmtime::Error::msg(why));
        }
        self.peak_memory = self.peak_memory.max(desired as u64);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        const TABLE_CAP: usize = 100_000;
        if desired > TABLE_CAP || max.is_some_and(|m| desired > m) {
            let why = format!(
                "table would grow from {current} to {desired} elements, over the limit of {TABLE_CAP}"
            );
            self.denied = Some(why.clone());
            return Err(wasmtime::Error::msg(why));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }
}

/// The linker every attempt shares: WASI preview1 (async) and `remotask.progress`.
pub(super) fn linker(engine: &Engine) -> Result<Linker<AttemptState>, SandboxError> {
    let mut linker = Linker::new(engine);
    let built =
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut AttemptState| &mut s.wasi)
            .and_then(|_| {
                linker.func_wrap(
                    super::admission::HOST_MODULE,
                    "progress",
                    |caller: Caller<'_, AttemptState>, done: i64, total: i64| {
                        if let Some(report) = &caller.data().progress {
                            report(done, total);
                        }
                    },
                )?;
                Ok(())
            });
    built.map_err(|e| SandboxError::Engine(format!("cannot build the linker: {e:#}")))?;
    Ok(linker)
}

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

pub(super) fn run_blocking(
    sandbox: &Sandbox,
    module: &TaskModule,
    request: AttemptRequest,
) -> AttemptReport {
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => *slot = Some(rt),
                Err(e) => {
                    return AttemptReport::host_error(
                        format!("cannot start a runtime for the attempt: {e}"),
                        module.cache,
                    );
                }
            }
        }
        let rt = slot.as_ref().expect("runtime was just created");
        rt.block_on(run_metered(
            sandbox,
            module,
            request,
            CpuMeter::whole_thread,
        ))
    })
}

/// Runs one attempt on a runtime it may share: its CPU time is charged per poll.
pub(super) async fn run(
    sandbox: &Sandbox,
    module: &TaskModule,
    request: AttemptRequest,
) -> AttemptReport {
    run_metered(sandbox, module, request, CpuMeter::per_poll).await
}

/// Runs one attempt, its CPU time charged by a meter `meter` makes when it starts.
async fn run_metered(
    sandbox: &Sandbox,
    module: &TaskModule,
    mut request: AttemptRequest,
    meter: fn() -> CpuMeter,
) -> AttemptReport {
    let limits = request.limits;
    // The form is compiled, the first time, before the attempt's clocks start.
    let (engine, form, made) = match forms::form(sandbox, &module.compiled, limits.metering) {
        Ok(found) => found,
        Err(message) => return AttemptReport::host_error(message, module.cache),
    };
    let compile_cache = match made {
        Some(status) => status,
        None if limits.metering == Metering::Fuel => module.cache,
        None => CacheStatus::Memory,
    };
    let started = Instant::now();
    let deadline = started + limits.max_time;
    let cancel = request.cancel.clone();
    let stdout = CappedPipe::new(limits.stdout_bytes, Overflow::Trap);
    let stderr = CappedPipe::new(limits.stderr_bytes, Overflow::Truncate);
    let scratch = if module.compiled.reaches_files {
        match sandbox.inner.scratch.take() {
            Ok(dir) => Some(dir),
            Err(e) => {
                let message = format!("cannot create the scratch directory: {e}");
                return AttemptReport::host_error(message, module.cache);
            }
        }
    } else {
        None
    };
    let pipes = (stdout.clone(), stderr.clone());
    let meter = Arc::new(meter());
    let scratch_dir = scratch.as_ref().map(|d| d.path());
    let host = HostInputs::new(request.replay.take(), started);
    let armed = wasi_context(request, pipes, scratch_dir, &host, deadline, meter.clone())
        .and_then(|state| armed_store(&engine.engine, state, &limits));
    let mut store = match armed {
        Ok(store) => store,
        Err(message) => return AttemptReport::host_error(message, compile_cache),
    };
    let (end, phase, instantiated_at) =
        race(&form.pre, &mut store, &cancel, deadline, meter.clone()).await;
    let finished = Instant::now();

    let fuel_consumed = (limits.metering == Metering::Fuel)
        .then(|| limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0)));
    let state = store.into_data();
    let (output, stdout_overflowed) = stdout.take();
    let (stderr_bytes, stderr_truncated) = stderr.take();
    let verdict = classify::classify(classify::Evidence {
        end,
        phase,
        stop: state.stop,
        memory_denied: state.limiter.denied.as_deref(),
        stdout_overflowed,
        limits: &limits,
        stderr: &stderr_bytes,
    });
    if let Some(dir) = scratch {
        sandbox.inner.scratch.give_back(dir);
    }
    AttemptReport {
        reason: verdict.reason,
        trap_kind: verdict.trap_kind,
        exit_code: verdict.exit_code,
        message: verdict.message,
        receipt: Receipt {
            fuel_consumed,
            cpu_us: micros(meter.spent()),
            peak_memory_bytes: state.limiter.peak_memory,
            wall_us: micros(finished - started),
            instantiate_us: micros(instantiated_at.unwrap_or(finished) - started),
            compile_cache,
            stdout_bytes: output.len() as u64,
            stderr_bytes: stderr_bytes.len() as u64,
        },
        output,
        stderr: stderr_bytes,
        stderr_truncated,
        recording: Some(host.recording()),
    }
}

/// The attempt's state: a WASI context (stdin the input, stdout and stderr the capped
/// pipes, argv, only the given env, the scratch directory as `/tmp` if there is one, the
/// attempt's generator and clocks), the
/// limiter, the progress sink and the stop conditions. An error says what could not be set
/// up.
fn wasi_context(
    request: AttemptRequest,
    (stdout, stderr): (CappedPipe, CappedPipe),
    scratch: Option<&std::path::Path>,
    host: &HostInputs,
    deadline: Instant,
    cpu: Arc<CpuMeter>,
) -> Result<AttemptState, String> {
    let mut argv = Vec::with_capacity(request.args.len() + 1);
    argv.push(request.task_name.as_str());
    argv.extend(request.args.iter().map(String::as_str));
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdin(MemoryInputPipe::new(request.input))
        .stdout(stdout)
        .stderr(stderr)
        .args(&argv)
        .envs(&request.env)
        // Never block the thread inside a host call: with this on, a WASI sleep becomes
        // `std::thread::sleep`, which no deadline or cancel could interrupt.
        .allow_blocking_current_thread(false);
    host.install(&mut wasi);
    if let Some(dir) = scratch {
        wasi.preopened_dir(dir, "/tmp", FsPerms::ReadWrite)
            .map_err(|e| format!("cannot open the scratch directory: {e:#}"))?;
    }
    Ok(AttemptState {
        wasi: wasi.build_p1(),
        limiter: GuestLimiter {
            memory_cap: request.limits.memory_bytes,
            peak_memory: 0,
            denied: None,
        },
        progress: request.progress,
        cpu_budget: request.limits.cpu_time,
        cpu,
        cancel: request.cancel,
        deadline,
        stop: None,
    })
}

/// A store for the attempt with every limit armed before anything runs (a start function
/// runs inside instantiation): the limiter, fuel, and the epoch callback that stops a
/// cancelled or late guest and otherwise yields every tick.
fn armed_store(
    engine: &Engine,
    state: AttemptState,
    limits: &Limits,
) -> Result<Store<AttemptState>, String> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    if limits.metering == Metering::Fuel {
        store
            .set_fuel(limits.fuel)
            .map_err(|e| format!("cannot set fuel: {e:#}"))?;
    }
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        if state.cancel.is_cancelled() {
            state.stop = Some(Stop::Cancelled);
            return Err(Trap::Interrupt.into());
        }
        if Instant::now() >= state.deadline {
            state.stop = Some(Stop::Deadline);
            return Err(Trap::Interrupt.into());
        }
        if let Some(budget) = state.cpu_budget
            && state.cpu.spent() >= budget
        {
            state.stop = Some(Stop::CpuLimit);
            return Err(Trap::Interrupt.into());
        }
        // Yield to the runtime every tick so the deadline and cancel branches of the race
        // are polled even while a guest computes without end.
        Ok(UpdateDeadline::Yield(1))
    });
    Ok(store)
}

/// Instantiates the module and calls `_start`, raced against the cancel and the deadline:
/// how it ended, in which phase, and when instantiation finished.
async fn race(
    pre: &InstancePre<AttemptState>,
    store: &mut Store<AttemptState>,
    cancel: &CancelToken,
    deadline: Instant,
    meter: Arc<CpuMeter>,
) -> (End, Phase, Option<Instant>) {
    let mut phase = Phase::Instantiate;
    let mut instantiated_at = None;
    let end = {
        let attempt = async {
            let instance = pre.instantiate_async(&mut *store).await?;
            instantiated_at = Some(Instant::now());
            // Admission checked `_start`'s type: not finding it is ours, not the guest's.
            let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
            phase = Phase::Run;
            start.call_async(&mut *store, ()).await
        };
        tokio::select! {
            biased;
            result = Metered::new(attempt, meter) => End::Returned(result),
            () = cancel.cancelled() => End::Stopped(Stop::Cancelled),
            () = tokio::time::sleep_until(deadline.into()) => End::Stopped(Stop::Deadline),
        }
    };
    (end, phase, instantiated_at)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
