//! Sandbox benchmarks; prints figures, asserts nothing. Run with
//! `cargo bench --bench sandbox` (builds the guests itself). Figures and targets are kept in
//! BENCHMARKS.md:
//! - per-attempt cost of `echo` (fresh store + WASI context + instantiate + run), p50/p99,
//!   in fuel metering and in CPU-time metering;
//! - compute: `fib` natively, in bare wasmtime (the same engine settings, no fuel, no epoch
//!   interruption, no limits) and in remotask under each metering; `word-count` over 10 MiB
//!   of text (a loop-heavy guest) in bare wasmtime and in remotask;
//! - compile time vs cached-artifact load for a module over 1 MiB;
//! - resident memory across 100,000 attempts.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use remotask::domain::{Limits, Metering, Reason};
use remotask::sandbox::{AttemptRequest, Sandbox, SandboxConfig, TaskModule};

#[path = "support/bare.rs"]
mod bare;
#[path = "support/guests.rs"]
mod guests;

fn main() {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let wants = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let guests = build_guests();
    println!(
        "remotask sandbox benchmarks ({} cores)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if wants("attempt") {
        attempt_cost(&guests);
    }
    if wants("fib") {
        fib_overhead(&guests);
    }
    if wants("wordcount") {
        word_count_overhead(&guests);
    }
    if wants("compile") {
        compile_vs_cache();
    }
    if wants("memory") {
        memory_over_attempts(&guests);
    }
}

fn build_guests() -> PathBuf {
    guests::build(&["echo", "fib", "word-count"])
}

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig {
        compile_budget: Duration::from_secs(600),
        ..Default::default()
    })
    .expect("sandbox")
}

/// The metering modes compared: fuel (the default), CPU time without a budget, and CPU time
/// with a budget (its clock read every epoch tick).
fn modes() -> [(&'static str, Limits); 3] {
    let fuel = Limits {
        fuel: u64::MAX / 2,
        ..Limits::default()
    };
    let cpu = fuel.with_metering(Metering::Cpu);
    let budget = cpu.with_cpu_ms(Some(60_000)).expect("a valid budget");
    [
        ("remotask fuel", fuel),
        ("remotask cpu", cpu),
        ("remotask cpu_ms", budget),
    ]
}

fn load(sandbox: &Sandbox, path: PathBuf) -> TaskModule {
    sandbox
        .admit(&std::fs::read(path).expect("guest built"))
        .expect("admitted")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn attempt_cost(guests: &std::path::Path) {
    println!("## per-attempt cost of echo (store + WASI ctx + scratch dir + instantiate + run)");
    let sb = sandbox();
    let module = load(&sb, guests.join("echo.wasm"));
    for (label, limits) in modes() {
        let request = AttemptRequest {
            task_name: "echo".into(),
            input: b"{\"x\":1}".to_vec(),
            limits,
            ..Default::default()
        };
        for _ in 0..1000 {
            sb.run_blocking(&module, request.clone());
        }
        let n = 20_000;
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let r = sb.run_blocking(&module, request.clone());
            times.push(t.elapsed());
            assert_eq!(r.reason, Reason::Completed);
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / n as u32;
        println!(
            "{label:<16}  n={n}  p50 {:>6.1} us  p99 {:>6.1} us  mean {:>6.1} us",
            micros(percentile(&times, 0.5)),
            micros(percentile(&times, 0.99)),
            micros(mean)
        );
    }
    println!();
}

#[inline(never)]
fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

fn best_of(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().expect("at least one run")
}

fn fib_overhead(guests: &std::path::Path) {
    let n = 35u64;
    println!("## fib({n}) by naive recursion (whole attempt, best of 7 turns; native best of 5)");
    let native = best_of(5, || {
        let t = Instant::now();
        black_box(fib(black_box(n)));
        t.elapsed()
    });
    println!("native            {:>8.1} ms", millis(native));
    let input = format!("{{\"n\":{n}}}").into_bytes();
    compare(guests.join("fib.wasm"), "fib", &input, Some(native));
}

fn word_count_overhead(guests: &std::path::Path) {
    let words = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
    ];
    let mut text = String::with_capacity(10 << 20);
    let mut i = 0usize;
    while text.len() < 10 << 20 {
        text.push_str(words[i % words.len()]);
        text.push(if i.is_multiple_of(13) { '\n' } else { ' ' });
        i += 1;
    }
    let input = serde_json::to_vec(&serde_json::json!({ "text": text })).expect("json");
    println!(
        "## word-count over {:.0} MiB of text (whole attempt, best of 7 turns)",
        input.len() as f64 / (1 << 20) as f64
    );
    compare(guests.join("word-count.wasm"), "word-count", &input, None);
}

/// One guest's attempt in bare wasmtime (without and with epoch interruption) and in remotask
/// under each metering, with the ratios to bare wasmtime (and to `native`, if given). The
/// contenders take turns, 7 rounds, and each keeps its best: the machine's speed drifts, and
/// turns expose them all to the same drift.
fn compare(path: PathBuf, name: &str, input: &[u8], native: Option<Duration>) {
    let bytes = std::fs::read(&path).expect("guest built");
    let bare = bare::Bare::new(&bytes, false);
    let with_epoch = bare::Bare::new(&bytes, true);
    let sb = sandbox();
    let module = load(&sb, path);
    let requests = modes().map(|(label, limits)| {
        let request = AttemptRequest {
            task_name: name.into(),
            input: input.to_vec(),
            limits,
            ..Default::default()
        };
        (label, request)
    });
    let mut best = [Duration::MAX; 5];
    let mut cpu_us = [0u64; 3];
    for _ in 0..7 {
        best[0] = best[0].min(bare.run(name, input));
        best[1] = best[1].min(with_epoch.run(name, input));
        for (i, (_, request)) in requests.iter().enumerate() {
            let t = Instant::now();
            let r = sb.run_blocking(&module, request.clone());
            let took = t.elapsed();
            assert_eq!(r.reason, Reason::Completed, "{:?}", r.message);
            if took < best[2 + i] {
                (best[2 + i], cpu_us[i]) = (took, r.receipt.cpu_us);
            }
        }
    }
    let base = best[0];
    let versus = |d: Duration| {
        let mut s = format!("{:.2}x bare", d.as_secs_f64() / base.as_secs_f64());
        if let Some(native) = native {
            s.push_str(&format!(
                "  {:.2}x native",
                d.as_secs_f64() / native.as_secs_f64()
            ));
        }
        s
    };
    println!(
        "bare wasmtime     {:>8.1} ms  {}",
        millis(base),
        versus(base)
    );
    println!(
        "bare + epoch      {:>8.1} ms  {}",
        millis(best[1]),
        versus(best[1])
    );
    for (i, (label, _)) in requests.iter().enumerate() {
        println!(
            "{label:<17} {:>8.1} ms  {}  (receipt: cpu {:.1} ms)",
            millis(best[2 + i]),
            versus(best[2 + i]),
            cpu_us[i] as f64 / 1e3
        );
    }
    println!();
}

/// A module over 1 MiB: many functions of straight-line arithmetic.
fn big_module() -> Vec<u8> {
    let mut wat =
        String::from("(module (memory (export \"memory\") 1) (func (export \"_start\"))\n");
    for i in 0..2500 {
        wat.push_str(&format!(
            "(func (export \"f{i}\") (param i32) (result i32) local.get 0\n"
        ));
        for k in 0..60 {
            wat.push_str(&format!(
                "i32.const {} i32.add i32.const {} i32.mul i32.const {} i32.xor\n",
                k * 7 + i,
                k + 3,
                i ^ k
            ));
        }
        wat.push_str(")\n");
    }
    wat.push(')');
    wat::parse_str(&wat).expect("generated wat parses")
}

fn compile_vs_cache() {
    let bytes = big_module();
    println!(
        "## compile vs cached artifact, module of {:.2} MiB",
        bytes.len() as f64 / (1 << 20) as f64
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || SandboxConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        compile_budget: Duration::from_secs(600),
        pool_slots: 0,
        ..Default::default()
    };
    let compiled = Sandbox::new(config())
        .expect("sandbox")
        .admit(&bytes)
        .expect("admitted")
        .report()
        .compile_ms;
    let loads: Vec<f64> = (0..5)
        .map(|_| {
            Sandbox::new(config())
                .expect("sandbox")
                .admit(&bytes)
                .expect("admitted")
                .report()
                .compile_ms
        })
        .collect();
    let load = loads.iter().copied().fold(f64::INFINITY, f64::min);
    println!("compile           {compiled:>8.1} ms");
    println!(
        "cached load       {load:>8.1} ms  ({:.0}x faster)\n",
        compiled / load
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn memory_over_attempts(guests: &std::path::Path) {
    println!("## resident memory across 100,000 echo attempts");
    let sb = sandbox();
    let module = load(&sb, guests.join("echo.wasm"));
    let request = AttemptRequest {
        task_name: "echo".into(),
        input: vec![b'x'; 4096],
        ..Default::default()
    };
    let mut done = 0;
    for checkpoint in [1_000, 10_000, 25_000, 50_000, 75_000, 100_000] {
        while done < checkpoint {
            let r = sb.run_blocking(&module, request.clone());
            assert_eq!(r.reason, Reason::Completed);
            done += 1;
        }
        println!(
            "after {checkpoint:>7} attempts  RSS {:>7.1} MiB",
            rss_kib() as f64 / 1024.0
        );
    }
    println!();
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
