//! Admission of a module: what is refused, with which message, before any compile; and the
//! report of what is admitted.

use remotask::domain::ModuleDigest;
use remotask::sandbox::{AdmissionError, ImportInfo, Sandbox, SandboxConfig};

use crate::support::{guest_bytes, sandbox, wat};

fn refusal(bytes: &[u8]) -> AdmissionError {
    sandbox().admit(bytes).expect_err("module is refused")
}

#[test]
fn an_admitted_module_reports_digest_size_exports_and_imports() {
    let bytes = guest_bytes("hostile");
    let m = sandbox().admit(&bytes).unwrap();
    let r = m.report();
    assert_eq!(r.digest, ModuleDigest::of(&bytes));
    assert_eq!(r.size_bytes, bytes.len());
    assert!(
        r.exports
            .iter()
            .any(|e| e.name == "_start" && e.kind == "func")
    );
    assert!(
        r.exports
            .iter()
            .any(|e| e.name == "memory" && e.kind == "memory")
    );
    assert!(
        r.imports
            .iter()
            .any(|i| i.module == "remotask" && i.name == "progress")
    );
    assert!(
        r.imports
            .iter()
            .all(|i| i.module == "remotask" || i.module == "wasi_snapshot_preview1")
    );
}

#[test]
fn empty_truncated_and_corrupt_files_are_refused_clearly() {
    assert_eq!(refusal(b""), AdmissionError::Empty);
    assert_eq!(
        refusal(b"\0as"),
        AdmissionError::Truncated("3 bytes is shorter than the 8-byte header".into())
    );
    assert_eq!(refusal(b"MZ\x90\0 this is an exe"), AdmissionError::NotWasm);
    let good = guest_bytes("echo");
    let cut = &good[..good.len() / 2];
    assert!(
        matches!(
            refusal(cut),
            AdmissionError::Truncated(_) | AdmissionError::Invalid(_)
        ),
        "{:?}",
        refusal(cut)
    );
    let mut flipped = good.clone();
    for b in flipped.iter_mut().skip(8).step_by(7) {
        *b ^= 0x5a;
    }
    let e = refusal(&flipped);
    assert!(
        matches!(e, AdmissionError::Invalid(_) | AdmissionError::Truncated(_)),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("at byte") || e.to_string().starts_with("invalid module"),
        "{e}"
    );
}

#[test]
fn the_text_format_is_refused_binaries_only() {
    assert_eq!(refusal(b"(module)"), AdmissionError::TextFormat);
    assert_eq!(refusal(b"  \n(module (func))"), AdmissionError::TextFormat);
}

#[test]
fn a_component_is_refused_as_not_supported_yet() {
    let component = b"\0asm\x0d\0\x01\0";
    let e = refusal(component);
    assert_eq!(e, AdmissionError::Component);
    assert!(
        e.to_string()
            .starts_with("components are not supported yet")
    );
}

#[test]
fn every_forbidden_import_is_named() {
    let e = refusal(&wat("forbidden_imports"));
    let AdmissionError::ForbiddenImports(imports) = &e else {
        panic!("{e:?}")
    };
    let names: Vec<String> = imports
        .iter()
        .map(|i: &ImportInfo| format!("{}.{}", i.module, i.name))
        .collect();
    assert_eq!(names, ["env.open_socket", "remotask.read_host_file"]);
    assert!(
        e.to_string()
            .contains("env.open_socket (func), remotask.read_host_file (func)"),
        "{e}"
    );
    let e = refusal(&wat("imported_memory"));
    assert!(e.to_string().contains("env.memory (memory)"), "{e}");
}

#[test]
fn a_module_without_start_and_memory_is_refused() {
    let e = refusal(&wat("no_start"));
    assert_eq!(
        e,
        AdmissionError::MissingExports(vec!["`_start`".into(), "`memory`".into()])
    );
}

#[test]
fn a_start_that_takes_parameters_is_refused_naming_its_type() {
    let e = refusal(&wat("start_with_params"));
    assert_eq!(e, AdmissionError::StartSignature("(i32) -> ()".into()));
    assert!(e.to_string().contains("`_start`"), "{e}");
}

#[test]
fn shared_memory_is_refused_because_threads_are_off() {
    let e = refusal(&wat("shared_memory"));
    assert!(matches!(e, AdmissionError::Invalid(_)), "{e:?}");
}

#[test]
fn a_module_over_the_size_cap_is_refused() {
    let config = SandboxConfig {
        max_module_bytes: 1000,
        pool_slots: 0,
        ..crate::support::test_config()
    };
    let small = Sandbox::new(config).unwrap();
    let bytes = guest_bytes("echo");
    assert_eq!(
        small.admit(&bytes).unwrap_err(),
        AdmissionError::TooLarge {
            size: bytes.len(),
            cap: 1000
        }
    );
}

#[test]
fn a_compile_over_the_budget_is_refused() {
    let config = SandboxConfig {
        compile_budget: std::time::Duration::from_micros(1),
        pool_slots: 0,
        ..crate::support::test_config()
    };
    let hurried = Sandbox::new(config).unwrap();
    let e = hurried.admit(&guest_bytes("word-count")).unwrap_err();
    assert!(matches!(e, AdmissionError::CompileBudget(_)), "{e:?}");
}

#[test]
fn bytes_that_do_not_match_the_digest_are_refused() {
    let bytes = guest_bytes("echo");
    let wrong = ModuleDigest::of(b"something else");
    let e = sandbox().module(wrong, || Ok(bytes.clone())).unwrap_err();
    assert_eq!(
        e,
        AdmissionError::DigestMismatch {
            expected: wrong,
            actual: ModuleDigest::of(&bytes)
        }
    );
}
