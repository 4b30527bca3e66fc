//! Every termination reason, reached by a fixture and asserted exactly, with the time it
//! took bounded where the reason is about time.

use std::time::{Duration, Instant};

use remotask::domain::{Limits, Metering, Reason, TrapKind};
use remotask::sandbox::{AttemptRequest, Sandbox, SandboxConfig};

use crate::support::{attempt, guest_bytes, hostile, limits_secs, text, wat};

#[test]
fn completed_echoes_the_input_as_output() {
    let r = hostile(&["echo"], b"{\"x\":1}", Limits::default());
    assert_eq!(r.reason, Reason::Completed);
    assert_eq!((r.exit_code, r.message.as_deref()), (Some(0), None));
    assert_eq!(r.output, b"{\"x\":1}");
}

#[test]
fn guest_error_carries_the_exit_code_and_last_log_line() {
    let r = hostile(&["exit", "3"], b"", Limits::default());
    assert_eq!(r.reason, Reason::GuestError);
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.message.as_deref(), Some("exiting with 3"));
}

#[test]
fn guest_error_without_a_log_says_the_exit_code() {
    let r = attempt(&wat("exit_code"), &[], b"", Limits::default());
    assert_eq!((r.reason, r.exit_code), (Reason::GuestError, Some(7)));
    assert_eq!(r.message.as_deref(), Some("exited with code 7"));
}

#[test]
fn exit_75_is_a_retryable_error() {
    let r = hostile(&["exit", "75"], b"", Limits::default());
    assert_eq!((r.reason, r.exit_code), (Reason::RetryableError, Some(75)));
    assert_eq!(r.message.as_deref(), Some("exiting with 75"));
}

#[test]
fn a_panic_traps_as_unreachable_with_the_panic_message() {
    let r = hostile(&["panic", "the sky fell"], b"", Limits::default());
    assert_eq!(
        (r.reason, r.trap_kind),
        (Reason::Trap, Some(TrapKind::Unreachable))
    );
    assert!(
        text(&r.stderr).contains("the sky fell"),
        "stderr: {}",
        text(&r.stderr)
    );
    let message = r.message.unwrap();
    assert!(
        message.starts_with("wasm trap: wasm `unreachable` instruction executed in "),
        "{message}"
    );
    assert!(message.contains("; last log line: "), "{message}");
}

#[test]
fn a_rust_guest_that_panics_shows_its_function_names_in_the_trap_message() {
    let r = hostile(&["panic", "boom"], b"", Limits::default());
    let message = r.message.unwrap();
    // Its own frame first, past the standard library's abort path, demangled, then its
    // callers out to `_start`.
    assert!(message.contains(" in hostile::main <- std::"), "{message}");
    assert!(message.contains("<- _start"), "{message}");
    assert!(message.contains("frames of the panic's abort"), "{message}");
    assert!(!message.contains("<wasm function"), "{message}");
}

#[test]
fn a_guest_built_with_line_tables_shows_file_and_line_in_the_trap_message() {
    // The hostile guest built as the SDK's docs say to keep line tables in a release build.
    let target = crate::support::guest_target_dir().with_extension("dwarf");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(crate::support::workspace())
        .args(["build", "--release", "--target", "wasm32-wasip1", "--quiet"])
        .args(["-p", "hostile"])
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_PROFILE_RELEASE_DEBUG", "line-tables-only")
        .env("CARGO_PROFILE_RELEASE_STRIP", "none")
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(target.join("wasm32-wasip1/release/hostile.wasm")).unwrap();
    let r = attempt(&bytes, &["panic", "boom"], b"", Limits::default());
    let source =
        std::fs::read_to_string(crate::support::workspace().join("tests/guest/src/main.rs"))
            .unwrap();
    let line = 1 + source
        .lines()
        .position(|l| l.trim_start().starts_with("\"panic\" =>"))
        .unwrap();
    let message = r.message.unwrap();
    assert!(message.contains("in hostile::main ("), "{message}");
    assert!(
        message.contains(&format!("tests/guest/src/main.rs:{line}) <- ")),
        "{message}"
    );
}

#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    let r = hostile(&["recurse"], b"", Limits::default());
    assert_eq!(
        (r.reason, r.trap_kind),
        (Reason::Trap, Some(TrapKind::StackOverflow))
    );
    let r = attempt(&wat("recurse"), &[], b"", Limits::default());
    assert_eq!(
        (r.reason, r.trap_kind),
        (Reason::Trap, Some(TrapKind::StackOverflow))
    );
}

#[test]
fn wasm_traps_have_their_kind() {
    let cases = [
        ("div_zero", TrapKind::DivideByZero),
        ("out_of_bounds", TrapKind::OutOfBounds),
        ("unreachable", TrapKind::Unreachable),
        ("null_call", TrapKind::IndirectCallToNull),
        ("bad_signature", TrapKind::BadSignature),
        ("table_out_of_bounds", TrapKind::TableOutOfBounds),
        ("integer_overflow", TrapKind::IntegerOverflow),
        ("bad_conversion", TrapKind::BadConversion),
        // A WASI call given memory outside the guest's is an out-of-bounds access too.
        ("wasi_out_of_bounds", TrapKind::OutOfBounds),
    ];
    for (fixture, kind) in cases {
        let r = attempt(&wat(fixture), &[], b"", Limits::default());
        assert_eq!(
            (r.reason, r.trap_kind),
            (Reason::Trap, Some(kind)),
            "{fixture}"
        );
    }
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let limits = Limits {
        fuel: 50_000_000,
        ..Limits::default()
    };
    let r = hostile(&["loop"], b"", limits);
    assert_eq!(r.reason, Reason::OutOfFuel);
    assert_eq!(r.receipt.fuel_consumed, Some(50_000_000));
}

#[test]
fn fuel_consumed_is_exact_and_repeatable() {
    let a = attempt(&wat("fuel_count"), &[], b"", Limits::default());
    let b = attempt(&wat("fuel_count"), &[], b"", Limits::default());
    assert_eq!(a.reason, Reason::Completed);
    let fuel = a.receipt.fuel_consumed.unwrap();
    assert!(
        fuel > 1000,
        "a 1000-iteration loop costs more than 1000 fuel, got {fuel}"
    );
    assert_eq!(b.receipt.fuel_consumed, Some(fuel));
    // Fuel is checked at loop headers and calls, so a budget of half is caught mid-loop.
    let short = Limits {
        fuel: fuel / 2,
        ..Limits::default()
    };
    assert_eq!(
        attempt(&wat("fuel_count"), &[], b"", short).reason,
        Reason::OutOfFuel
    );
}

/// Limits of the CPU-time metering: no fuel, `cpu_ms` and a wall-clock budget of 10 s.
fn cpu_limits(cpu_ms: u64) -> Limits {
    limits_secs(10.0)
        .with_cpu_ms(Some(cpu_ms))
        .unwrap()
        .with_metering(Metering::Cpu)
}

#[test]
fn an_endless_loop_spends_its_cpu_budget_without_fuel_and_the_sandbox_goes_on() {
    let started = Instant::now();
    let r = hostile(&["loop"], b"", cpu_limits(200));
    let took = started.elapsed();
    assert_eq!(r.reason, Reason::CpuLimit, "{:?}", r.message);
    assert_eq!(r.receipt.fuel_consumed, None, "no fuel is metered");
    let cpu = Duration::from_micros(r.receipt.cpu_us);
    assert!(
        cpu >= Duration::from_millis(200) && cpu < Duration::from_millis(400),
        "charged {cpu:?} for a budget of 200 ms"
    );
    assert!(
        took < Duration::from_secs(5),
        "stopped long before the deadline: {took:?}"
    );
    // The same module runs again in either form.
    let again = hostile(&["echo"], b"next", cpu_limits(1_000));
    assert_eq!(
        (again.reason, again.output.as_slice()),
        (Reason::Completed, &b"next"[..])
    );
    let fueled = hostile(&["echo"], b"fuel", Limits::default());
    assert_eq!(fueled.reason, Reason::Completed);
    assert!(fueled.receipt.fuel_consumed.is_some());
}

#[test]
fn a_cpu_budget_holds_with_fuel_metering_too() {
    let limits = limits_secs(10.0).with_cpu_ms(Some(150)).unwrap();
    assert_eq!(limits.metering, Metering::Fuel);
    let r = hostile(&["loop"], b"", limits);
    assert_eq!(r.reason, Reason::CpuLimit, "{:?}", r.message);
    assert!(r.receipt.fuel_consumed.unwrap() > 0);
}

#[test]
fn a_guest_that_sleeps_between_computing_is_charged_only_for_computing() {
    // 2 x 150 ms of compute around a 600 ms sleep, under a CPU budget of 450 ms: the wall
    // time passes the budget, the CPU time does not.
    let r = hostile(&["burn-sleep", "150"], b"", cpu_limits(450));
    assert_eq!(r.reason, Reason::Completed, "{:?}", r.message);
    assert_eq!(text(&r.output), "done\n");
    let (cpu, wall) = (
        Duration::from_micros(r.receipt.cpu_us),
        Duration::from_micros(r.receipt.wall_us),
    );
    // The guest computes for 2 x 150 ms of wall time; on a busy machine it gets less CPU
    // than that, never more, and the 600 ms asleep are not charged.
    assert!(wall >= Duration::from_millis(900), "wall {wall:?}");
    assert!(
        cpu >= Duration::from_millis(10) && cpu + Duration::from_millis(600) <= wall,
        "charged {cpu:?} of {wall:?}, 600 ms of which asleep"
    );
}

#[test]
fn an_endless_loop_hits_the_deadline_on_time() {
    let started = Instant::now();
    let r = hostile(&["loop"], b"", limits_secs(0.3));
    let took = started.elapsed();
    assert_eq!(r.reason, Reason::Deadline);
    assert!(
        took < Duration::from_millis(400),
        "deadline of 300 ms took {took:?}"
    );
    assert!(took >= Duration::from_millis(300), "ended early: {took:?}");
}

#[test]
fn a_guest_sleeping_in_a_host_call_hits_the_deadline_on_time() {
    let started = Instant::now();
    let r = hostile(&["sleep", "3600"], b"", limits_secs(0.3));
    let took = started.elapsed();
    assert_eq!(r.reason, Reason::Deadline);
    assert!(
        took < Duration::from_millis(400),
        "deadline of 300 ms took {took:?}"
    );
}

#[test]
fn a_short_sleep_completes() {
    let r = hostile(&["sleep", "0.05"], b"", limits_secs(5.0));
    assert_eq!(r.reason, Reason::Completed);
    assert_eq!(text(&r.output).trim(), "slept");
}

#[test]
fn an_endless_start_function_is_stopped_by_fuel_and_by_the_deadline() {
    let r = attempt(
        &wat("start_loop"),
        &[],
        b"",
        Limits {
            fuel: 1_000_000,
            ..Limits::default()
        },
    );
    assert_eq!(r.reason, Reason::OutOfFuel);
    let started = Instant::now();
    let r = attempt(&wat("start_loop"), &[], b"", limits_secs(0.2));
    assert_eq!(r.reason, Reason::Deadline);
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[test]
fn a_memory_grow_bomb_ends_as_memory_limit() {
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let r = attempt(&wat("grow_bomb"), &[], b"", limits);
    assert_eq!(r.reason, Reason::MemoryLimit);
    assert!(
        r.message
            .unwrap()
            .contains("over the limit of 16777216 bytes")
    );
    assert_eq!(r.receipt.peak_memory_bytes, 16 << 20);
}

#[test]
fn allocating_past_the_limit_ends_as_memory_limit() {
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let r = hostile(&["alloc", "64"], b"", limits);
    assert_eq!(r.reason, Reason::MemoryLimit);
    let r = hostile(&["alloc", "8"], b"", limits);
    assert_eq!(r.reason, Reason::Completed);
    assert!(r.receipt.peak_memory_bytes >= 8 << 20);
}

#[test]
fn initial_memory_over_the_limit_ends_as_memory_limit() {
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let r = attempt(&wat("big_initial_memory"), &[], b"", limits);
    assert_eq!(r.reason, Reason::MemoryLimit);
}

#[test]
fn eight_mib_to_stdout_is_an_output_limit_under_the_default_cap() {
    let r = hostile(&["write", &(8 << 20).to_string()], b"", Limits::default());
    assert_eq!(r.reason, Reason::OutputLimit);
    assert!(r.output.len() <= 1 << 20);
    let big = Limits {
        stdout_bytes: 16 << 20,
        ..Limits::default()
    };
    let r = hostile(&["write", &(8 << 20).to_string()], b"", big);
    assert_eq!(r.reason, Reason::Completed);
    assert_eq!(r.output.len(), 8 << 20);
}

#[test]
fn a_flooded_stderr_is_truncated_not_fatal() {
    let limits = Limits {
        stderr_bytes: 1000,
        ..Limits::default()
    };
    let r = hostile(&["write-stderr", "100000"], b"", limits);
    assert_eq!(r.reason, Reason::Completed);
    assert!(r.stderr_truncated);
    assert_eq!(r.stderr.len(), 1000);
}

#[test]
fn a_fault_of_the_host_is_a_host_error() {
    let config = SandboxConfig {
        scratch_dir: "/nonexistent/remotask-scratch".into(),
        pool_slots: 0,
        ..crate::support::test_config()
    };
    let sandbox = Sandbox::new(config).unwrap();
    let module = sandbox.admit(&guest_bytes("hostile")).unwrap();
    let request = AttemptRequest {
        args: vec!["echo".into()],
        ..Default::default()
    };
    let r = sandbox.run_blocking(&module, request);
    assert_eq!(r.reason, Reason::HostError);
    assert!(r.message.unwrap().contains("scratch directory"));
}

#[test]
fn the_receipt_accounts_for_the_attempt() {
    let r = hostile(&["echo"], b"abc", Limits::default());
    let c = &r.receipt;
    assert!(c.fuel_consumed.unwrap() > 0);
    assert!(c.peak_memory_bytes >= 64 << 10);
    assert!(c.wall_us >= c.instantiate_us);
    assert_eq!((c.stdout_bytes, c.stderr_bytes), (3, 0));
}
