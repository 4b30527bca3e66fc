//! `hostile`: a test guest that misbehaves on command, written against the raw guest contract
//! with std only (no SDK). argv[1] is the command, argv[2..] its parameters:
//!
//! | command | does |
//! |---|---|
//! | `echo` | copies stdin to stdout |
//! | `loop` | spins forever |
//! | `alloc MIB` | allocates and touches MIB MiB, then prints the total |
//! | `recurse` | recurses without end (stack overflow) |
//! | `sleep SECS` | sleeps in `poll_oneoff`, then prints `slept` |
//! | `burn-sleep MS` | computes for MS ms, sleeps 4 × MS ms, computes for MS ms, prints `done` |
//! | `panic MSG` | panics with MSG (a trap: Rust aborts with `unreachable`) |
//! | `exit N` | writes `exiting with N` to stderr and exits with N |
//! | `write N` / `write-stderr N` | writes N bytes of `x` to stdout / stderr |
//! | `read PATH` / `list PATH` | prints a file / a directory listing, or `error: ...` and exit 1 |
//! | `scratch` | prints `empty` (or `not empty: names`) for /tmp, then writes and reads a file there |
//! | `hide-in-scratch` | leaves a file in /tmp and sets /tmp's times to those of an unused scratch directory |
//! | `env` / `args` | prints the environment (`K=V` lines) / argv as a JSON array |
//! | `progress N` | reports progress 1..=N of N through the `remotask.progress` import |
//! | `progress-sleep N SECS` | reports progress N of N, then sleeps SECS and prints `done` |
//! | `div0` | integer division by zero (a Rust panic, so an `unreachable` trap) |
//! | `clocks N` | reads both clocks N times, computing as long as the values say; prints a digest of them |
//! | `random N` | reads 32 random bytes N times and fills a `HashMap`, computing as long as the bytes say; prints a digest and exits with a code (1 to 100) that follows from them |
//! | `clock-sleep N MS` | N times: sleeps MS ms, then reads both clocks; prints a digest of what it saw |

use std::hint::black_box;
use std::io::{Read, Write};
use std::process::exit;

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "remotask")]
unsafe extern "C" {
    #[link_name = "progress"]
    fn remotask_progress(done: i64, total: i64);
}

fn report_progress(done: i64, total: i64) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the host provides `remotask.progress(i64, i64)`; it reads only its arguments.
    unsafe {
        remotask_progress(done, total)
    };
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (done, total);
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("error: {message}");
    exit(1)
}

fn number<T: std::str::FromStr>(arg: Option<&String>, what: &str) -> T {
    arg.and_then(|a| a.parse().ok())
        .unwrap_or_else(|| fail(format!("{what} needs a number")))
}

#[inline(never)]
#[expect(
    unconditional_recursion,
    reason = "recursing without end is the command"
)]
fn recurse(depth: u64) -> u64 {
    // Scalars only: the wasm call stack runs out before Rust's shadow stack in linear memory
    // (which would end as an out-of-bounds access instead).
    black_box(recurse(depth.wrapping_add(black_box(1)))).wrapping_add(depth)
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    #[link_name = "random_get"]
    fn wasi_random_get(buf: *mut u8, len: usize) -> i32;
}

/// 32 bytes from the host's `random_get`, as asked for directly.
fn random_bytes() -> [u8; 32] {
    let mut buf = [0u8; 32];
    #[cfg(target_arch = "wasm32")]
    // SAFETY: `random_get` writes exactly `len` bytes at `buf`, which is that long.
    let errno = unsafe { wasi_random_get(buf.as_mut_ptr(), buf.len()) };
    #[cfg(not(target_arch = "wasm32"))]
    let errno = 0;
    if errno != 0 {
        fail(format!("random_get failed with errno {errno}"));
    }
    buf
}

/// Folds `value` into `digest` (FNV-1a over its bytes), and computes as long as it says, so
/// that a different value costs different fuel too.
fn fold(digest: &mut u64, value: u64) {
    for b in value.to_le_bytes() {
        *digest = (*digest ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let mut spin = black_box(0u64);
    for i in 0..(value % 1024) {
        spin = black_box(spin.wrapping_add(i));
    }
    *digest ^= spin & 1;
}

/// Both clocks, in nanoseconds: since the Unix epoch, and since `start`.
fn clocks(start: std::time::Instant) -> (u64, u64) {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_else(|e| fail(e))
        .as_nanos() as u64;
    (wall, start.elapsed().as_nanos() as u64)
}

fn write_n(out: &mut dyn Write, n: usize) {
    let chunk = vec![b'x'; 64 << 10];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        out.write_all(&chunk[..k]).unwrap_or_else(|e| fail(e));
        left -= k;
    }
    out.flush().unwrap_or_else(|e| fail(e));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let command = args.get(1).map(String::as_str).unwrap_or("");
    let param = args.get(2);
    let mut stdout = std::io::stdout();
    match command {
        "echo" => {
            let mut input = Vec::new();
            std::io::stdin()
                .read_to_end(&mut input)
                .unwrap_or_else(|e| fail(e));
            stdout.write_all(&input).unwrap_or_else(|e| fail(e));
        }
        "loop" => {
            let mut i: u64 = 0;
            loop {
                i = black_box(i.wrapping_add(1));
            }
        }
        "alloc" => {
            let mib: usize = number(param, "alloc");
            let mut kept = Vec::new();
            for _ in 0..mib {
                let mut block = vec![0u8; 1 << 20];
                block[0] = 1;
                block[(1 << 20) - 1] = 1;
                kept.push(black_box(block));
            }
            println!("{}", kept.len() << 20);
        }
        "recurse" => {
            println!("{}", recurse(0));
        }
        "burn-sleep" => {
            // Computes for `ms`, sleeps four times that, computes for `ms` again.
            let ms: u64 = number(param, "burn-sleep");
            let burn = || {
                let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
                let mut i: u64 = 0;
                while std::time::Instant::now() < until {
                    i = black_box(i.wrapping_add(1));
                }
            };
            burn();
            std::thread::sleep(std::time::Duration::from_millis(4 * ms));
            burn();
            println!("done");
        }
        "sleep" => {
            let secs: f64 = number(param, "sleep");
            std::thread::sleep(std::time::Duration::from_secs_f64(secs));
            println!("slept");
        }
        "panic" => panic!("{}", param.map(String::as_str).unwrap_or("panic")),
        "exit" => {
            let code: i32 = number(param, "exit");
            eprintln!("exiting with {code}");
            exit(code)
        }
        "clocks" => {
            let n: u64 = number(param, "clocks");
            let (start, mut digest) = (std::time::Instant::now(), 0xcbf2_9ce4_8422_2325);
            for _ in 0..n {
                let (wall, mono) = clocks(start);
                fold(&mut digest, wall);
                fold(&mut digest, mono);
            }
            println!("clocks {n}: {digest:016x}");
        }
        "random" => {
            let n: u64 = number(param, "random");
            let mut digest = 0xcbf2_9ce4_8422_2325;
            for _ in 0..n {
                for chunk in random_bytes().chunks_exact(8) {
                    fold(&mut digest, u64::from_le_bytes(chunk.try_into().unwrap()));
                }
            }
            // std's HashMap keys its hasher from `random_get` too: its order shows them.
            let map: std::collections::HashMap<u64, ()> = (0..16).map(|k| (k, ())).collect();
            let order: Vec<u64> = map.keys().copied().collect();
            println!("random {n}: {digest:016x} {order:?}");
            exit(1 + (digest % 100) as i32)
        }
        "clock-sleep" => {
            let n: u64 = number(param, "clock-sleep");
            let ms: u64 = number(args.get(3), "clock-sleep");
            let (start, mut digest) = (std::time::Instant::now(), 0xcbf2_9ce4_8422_2325);
            for _ in 0..n {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                let (wall, mono) = clocks(start);
                fold(&mut digest, wall);
                fold(&mut digest, mono);
            }
            println!("clock-sleep {n}: {digest:016x}");
        }
        "write" => write_n(&mut stdout, number(param, "write")),
        "write-stderr" => write_n(&mut std::io::stderr(), number(param, "write-stderr")),
        "read" => {
            let path = param.unwrap_or_else(|| fail("read needs a path"));
            let bytes = std::fs::read(path).unwrap_or_else(|e| fail(e));
            stdout.write_all(&bytes).unwrap_or_else(|e| fail(e));
        }
        "list" => {
            let path = param.unwrap_or_else(|| fail("list needs a path"));
            for entry in std::fs::read_dir(path).unwrap_or_else(|e| fail(e)) {
                let entry = entry.unwrap_or_else(|e| fail(e));
                println!("{}", entry.file_name().to_string_lossy());
            }
        }
        "scratch" => {
            let names: Vec<String> = std::fs::read_dir("/tmp")
                .unwrap_or_else(|e| fail(e))
                .map(|e| {
                    e.map(|e| e.file_name().to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect();
            if names.is_empty() {
                println!("empty");
            } else {
                println!("not empty: {}", names.join(" "));
            }
            std::fs::write("/tmp/scratch.txt", "hello").unwrap_or_else(|e| fail(e));
            println!(
                "{}",
                std::fs::read_to_string("/tmp/scratch.txt").unwrap_or_else(|e| fail(e))
            );
        }
        "hide-in-scratch" => {
            std::fs::write("/tmp/hidden.txt", "for the next guest").unwrap_or_else(|e| fail(e));
            // 2000-01-01T00:00:00Z, the times the host gives every reused scratch directory.
            let fixed = std::time::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800);
            let times = std::fs::FileTimes::new()
                .set_accessed(fixed)
                .set_modified(fixed);
            std::fs::File::open("/tmp")
                .and_then(|dir| dir.set_times(times))
                .unwrap_or_else(|e| fail(e));
            println!("hidden");
        }
        "env" => {
            for (k, v) in std::env::vars() {
                println!("{k}={v}");
            }
        }
        "args" => {
            let quoted: Vec<String> = args
                .iter()
                .map(|a| format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            println!("[{}]", quoted.join(","));
        }
        "progress" => {
            let total: i64 = number(param, "progress");
            for done in 1..=total {
                report_progress(done, total);
            }
            println!("done");
        }
        "progress-sleep" => {
            let total: i64 = number(param, "progress-sleep");
            let secs: f64 = number(args.get(3), "progress-sleep");
            report_progress(total, total);
            std::thread::sleep(std::time::Duration::from_secs_f64(secs));
            println!("done");
        }
        "div0" => {
            let zero = black_box(0u32);
            println!("{}", black_box(1u32) / zero);
        }
        other => {
            eprintln!("error: unknown command {other}");
            exit(2)
        }
    }
}
