//! What a guest can see of the host: only its input, argv, the env vars given, and one empty
//! scratch directory that is gone after the attempt. Escapes fail inside the guest.

use std::sync::{Arc, Mutex};

use remotask::domain::{Limits, Reason};
use remotask::sandbox::{AttemptRequest, Sandbox, SandboxConfig};

use crate::support::{guest_bytes, hostile, module, sandbox, text};

#[test]
fn reading_etc_passwd_fails_inside_the_guest() {
    let r = hostile(&["read", "/etc/passwd"], b"", Limits::default());
    assert_eq!(r.reason, Reason::GuestError);
    assert!(r.output.is_empty());
    assert!(r.message.unwrap().starts_with("error:"));
}

#[test]
fn dot_dot_escapes_from_the_scratch_dir_fail_inside_the_guest() {
    for path in [
        "/tmp/../etc/passwd",
        "/tmp/../../../../etc/hostname",
        "../etc/passwd",
        "/tmp/..",
    ] {
        let r = hostile(&["read", path], b"", Limits::default());
        assert_eq!(r.reason, Reason::GuestError, "{path}: {}", text(&r.output));
        assert!(
            r.output.is_empty(),
            "{path} leaked {} bytes",
            r.output.len()
        );
    }
    let r = hostile(&["list", "/"], b"", Limits::default());
    assert_eq!(
        r.reason,
        Reason::GuestError,
        "listing / gave {}",
        text(&r.output)
    );
}

#[test]
fn the_host_environment_is_invisible() {
    assert!(
        std::env::var_os("PATH").is_some(),
        "the test process has a PATH"
    );
    let request = AttemptRequest {
        args: vec!["env".into()],
        env: vec![("GREETING".into(), "hello".into())],
        ..Default::default()
    };
    let r = sandbox().run_blocking(&module(&guest_bytes("hostile")), request);
    assert_eq!(r.reason, Reason::Completed);
    assert_eq!(text(&r.output), "GREETING=hello\n");
    let r = hostile(&["env"], b"", Limits::default());
    assert_eq!(text(&r.output), "");
}

#[test]
fn argv_is_the_task_name_then_the_job_args() {
    let request = AttemptRequest {
        task_name: "resize".into(),
        args: vec!["args".into(), "--width".into(), "a b".into()],
        ..Default::default()
    };
    let r = sandbox().run_blocking(&module(&guest_bytes("hostile")), request);
    assert_eq!(
        text(&r.output).trim(),
        r#"["resize","args","--width","a b"]"#
    );
}

#[test]
fn each_attempt_gets_an_empty_scratch_dir_that_is_removed_after() {
    let root = tempfile::tempdir().unwrap();
    let config = SandboxConfig {
        scratch_dir: root.path().to_path_buf(),
        pool_slots: 0,
        ..crate::support::test_config()
    };
    let sandbox = Sandbox::new(config).unwrap();
    let module = sandbox.admit(&guest_bytes("hostile")).unwrap();
    for _ in 0..2 {
        let r = sandbox.run_blocking(
            &module,
            AttemptRequest {
                args: vec!["scratch".into()],
                ..Default::default()
            },
        );
        assert_eq!(r.reason, Reason::Completed, "{}", text(&r.stderr));
        assert_eq!(text(&r.output), "empty\nhello\n");
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            0,
            "scratch dir left behind"
        );
    }
}

/// A module that imports no WASI function naming a path or a directory could not reach
/// `/tmp`, so its attempts are given no scratch directory. With a scratch root that cannot
/// hold one, such a module still runs, and one that uses files ends `host_error`.
#[test]
fn a_module_that_cannot_reach_files_runs_without_a_scratch_dir() {
    let root = tempfile::tempdir().unwrap();
    let not_a_dir = root.path().join("a-file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let config = SandboxConfig {
        scratch_dir: not_a_dir,
        pool_slots: 0,
        ..crate::support::test_config()
    };
    let sandbox = Sandbox::new(config).unwrap();
    let echo = sandbox.admit(&guest_bytes("echo")).unwrap();
    let r = sandbox.run_blocking(
        &echo,
        AttemptRequest {
            input: b"hi".to_vec(),
            ..Default::default()
        },
    );
    assert_eq!(r.reason, Reason::Completed, "{}", text(&r.stderr));
    assert_eq!(r.output, b"hi");
    let hostile = sandbox.admit(&guest_bytes("hostile")).unwrap();
    let r = sandbox.run_blocking(
        &hostile,
        AttemptRequest {
            args: vec!["scratch".into()],
            ..Default::default()
        },
    );
    assert_eq!(r.reason, Reason::HostError, "{}", text(&r.stderr));
}

/// A guest that leaves a file and puts the directory's times back as they were: the next
/// guest still starts empty (the change time, which no call can set, gives the file away).
#[test]
fn a_file_hidden_behind_restored_times_never_reaches_the_next_guest() {
    let root = tempfile::tempdir().unwrap();
    let config = SandboxConfig {
        scratch_dir: root.path().to_path_buf(),
        ..crate::support::test_config()
    };
    let sandbox = Sandbox::new(config).unwrap();
    let module = sandbox.admit(&guest_bytes("hostile")).unwrap();
    let run = |command: &str| {
        let r = sandbox.run_blocking(
            &module,
            AttemptRequest {
                args: vec![command.into()],
                ..Default::default()
            },
        );
        assert_eq!(r.reason, Reason::Completed, "{}", text(&r.stderr));
        text(&r.output)
    };
    // The directory is seen empty after a first attempt; the next one begins well after.
    assert_eq!(run("echo"), "");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(run("hide-in-scratch"), "hidden\n");
    assert_eq!(run("scratch"), "empty\nhello\n");
}

#[test]
fn progress_reaches_the_callback_in_order() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let request = AttemptRequest {
        args: vec!["progress".into(), "4".into()],
        progress: Some(Arc::new(move |done, total| {
            sink.lock().unwrap().push((done, total))
        })),
        ..Default::default()
    };
    let r = sandbox().run_blocking(&module(&guest_bytes("hostile")), request);
    assert_eq!(r.reason, Reason::Completed);
    assert_eq!(*seen.lock().unwrap(), vec![(1, 4), (2, 4), (3, 4), (4, 4)]);
}
