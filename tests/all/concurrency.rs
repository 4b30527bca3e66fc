//! Cancellation from another thread, attempts in parallel, and a worker thread that stays
//! healthy after every kind of hostile guest.

use std::thread;
use std::time::{Duration, Instant};

use remotask::domain::{Limits, Reason};
use remotask::sandbox::{AttemptRequest, CancelToken};

use crate::support::{attempt, guest_bytes, hostile, limits_secs, module, sandbox, wat};

fn cancel_after(token: &CancelToken, after: Duration) -> thread::JoinHandle<Instant> {
    let token = token.clone();
    thread::spawn(move || {
        thread::sleep(after);
        token.cancel();
        Instant::now()
    })
}

fn request(args: &[&str], limits: Limits, cancel: &CancelToken) -> AttemptRequest {
    AttemptRequest {
        task_name: "hostile".into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        limits,
        cancel: cancel.clone(),
        ..Default::default()
    }
}

#[test]
fn cancelling_a_computing_guest_ends_it_within_milliseconds() {
    let token = CancelToken::new();
    let module = module(&guest_bytes("hostile"));
    let canceller = cancel_after(&token, Duration::from_millis(100));
    let r = sandbox().run_blocking(&module, request(&["loop"], limits_secs(30.0), &token));
    let ended = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    assert_eq!(r.reason, Reason::Cancelled);
    assert!(
        ended - cancelled_at < Duration::from_millis(20),
        "took {:?} after cancel",
        ended - cancelled_at
    );
}

#[test]
fn cancelling_a_sleeping_guest_ends_it_within_milliseconds() {
    let token = CancelToken::new();
    let module = module(&guest_bytes("hostile"));
    let canceller = cancel_after(&token, Duration::from_millis(100));
    let r = sandbox().run_blocking(
        &module,
        request(&["sleep", "3600"], limits_secs(30.0), &token),
    );
    let ended = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    assert_eq!(r.reason, Reason::Cancelled);
    assert!(
        ended - cancelled_at < Duration::from_millis(20),
        "took {:?} after cancel",
        ended - cancelled_at
    );
}

#[test]
fn a_token_cancelled_before_the_start_stops_the_attempt_at_once() {
    let token = CancelToken::new();
    token.cancel();
    let r = sandbox().run_blocking(
        &module(&guest_bytes("hostile")),
        request(&["loop"], limits_secs(30.0), &token),
    );
    assert_eq!(r.reason, Reason::Cancelled);
}

#[test]
fn two_attempts_in_parallel_one_cancelled_the_other_completes() {
    let module = module(&guest_bytes("hostile"));
    let token = CancelToken::new();
    let looping = {
        let (module, token) = (module.clone(), token.clone());
        thread::spawn(move || {
            sandbox().run_blocking(&module, request(&["loop"], limits_secs(30.0), &token))
        })
    };
    let working = {
        let module = module.clone();
        thread::spawn(move || {
            let idle = CancelToken::new();
            (0..20)
                .map(|_| {
                    sandbox().run_blocking(
                        &module,
                        request(&["sleep", "0.01"], limits_secs(30.0), &idle),
                    )
                })
                .collect::<Vec<_>>()
        })
    };
    thread::sleep(Duration::from_millis(100));
    token.cancel();
    assert_eq!(looping.join().unwrap().reason, Reason::Cancelled);
    for r in working.join().unwrap() {
        assert_eq!(r.reason, Reason::Completed);
        assert_eq!(r.output, b"slept\n");
    }
}

#[test]
fn the_thread_runs_the_next_attempt_normally_after_each_hostile_one() {
    let small = Limits {
        fuel: 20_000_000,
        memory_bytes: 16 << 20,
        ..limits_secs(0.3)
    };
    let hostile_runs: Vec<(Vec<&str>, Reason)> = vec![
        (vec!["loop"], Reason::OutOfFuel),
        (vec!["sleep", "60"], Reason::Deadline),
        (vec!["alloc", "64"], Reason::MemoryLimit),
        (vec!["recurse"], Reason::Trap),
        (vec!["panic", "boom"], Reason::Trap),
        (vec!["write", "2000000"], Reason::OutputLimit),
        (vec!["exit", "1"], Reason::GuestError),
    ];
    let cpu = small
        .with_cpu_ms(Some(50))
        .unwrap()
        .with_metering(remotask::domain::Metering::Cpu);
    let hostile_runs = hostile_runs
        .into_iter()
        .map(|(args, reason)| (args, reason, small))
        .chain([(vec!["loop"], Reason::CpuLimit, cpu)]);
    for (args, reason, limits) in hostile_runs {
        assert_eq!(hostile(&args, b"", limits).reason, reason, "{args:?}");
        let next = hostile(&["echo"], b"still fine", Limits::default());
        assert_eq!(
            (next.reason, next.output.as_slice()),
            (Reason::Completed, &b"still fine"[..]),
            "after {args:?}"
        );
    }
    for fixture in ["grow_bomb", "start_loop", "div_zero"] {
        let r = attempt(&wat(fixture), &[], b"", small);
        assert_ne!(r.reason, Reason::Completed, "{fixture}");
        let next = hostile(&["echo"], b"ok", Limits::default());
        assert_eq!(next.reason, Reason::Completed, "after {fixture}");
    }
}
