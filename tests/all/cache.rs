//! The compiled-module caches: in memory within a process, on disk across restarts, and a
//! corrupted disk entry recompiled rather than loaded.

use remotask::domain::{Limits, Reason};
use remotask::sandbox::{AttemptRequest, CacheStatus, Sandbox, SandboxConfig};

use crate::support::guest_bytes;

fn sandbox_with_cache(dir: &std::path::Path) -> Sandbox {
    Sandbox::new(SandboxConfig {
        cache_dir: Some(dir.to_path_buf()),
        pool_slots: 0,
        ..crate::support::test_config()
    })
    .unwrap()
}

fn cwasm_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for engine_dir in std::fs::read_dir(dir).unwrap() {
        for f in std::fs::read_dir(engine_dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "cwasm") {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn a_restart_loads_the_compiled_artifact_instead_of_recompiling() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = guest_bytes("echo");
    let first = sandbox_with_cache(dir.path());
    assert_eq!(
        first.admit(&bytes).unwrap().cache_status(),
        CacheStatus::Miss
    );
    assert_eq!(
        first.admit(&bytes).unwrap().cache_status(),
        CacheStatus::Memory
    );
    drop(first);
    let restarted = sandbox_with_cache(dir.path());
    let module = restarted.admit(&bytes).unwrap();
    assert_eq!(module.cache_status(), CacheStatus::Disk);
    let r = restarted.run_blocking(
        &module,
        AttemptRequest {
            input: b"hi".to_vec(),
            ..Default::default()
        },
    );
    assert_eq!(
        (r.reason, r.output.as_slice()),
        (Reason::Completed, &b"hi"[..])
    );
    assert_eq!(r.receipt.compile_cache, CacheStatus::Disk);
}

#[test]
fn a_corrupted_cache_entry_is_recompiled_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = guest_bytes("echo");
    sandbox_with_cache(dir.path()).admit(&bytes).unwrap();
    let files = cwasm_files(dir.path());
    assert_eq!(files.len(), 1);
    let mut artifact = std::fs::read(&files[0]).unwrap();
    let middle = artifact.len() / 2;
    artifact[middle] ^= 0xff;
    std::fs::write(&files[0], &artifact).unwrap();

    let restarted = sandbox_with_cache(dir.path());
    let module = restarted.admit(&bytes).unwrap();
    assert_eq!(module.cache_status(), CacheStatus::Miss);
    let r = restarted.run_blocking(
        &module,
        AttemptRequest {
            input: b"ok".to_vec(),
            limits: Limits::default(),
            ..Default::default()
        },
    );
    assert_eq!(r.reason, Reason::Completed);

    std::fs::write(&files[0], b"short").unwrap();
    assert_eq!(
        sandbox_with_cache(dir.path())
            .admit(&bytes)
            .unwrap()
            .cache_status(),
        CacheStatus::Miss
    );
    assert_eq!(
        sandbox_with_cache(dir.path())
            .admit(&bytes)
            .unwrap()
            .cache_status(),
        CacheStatus::Disk
    );
}
