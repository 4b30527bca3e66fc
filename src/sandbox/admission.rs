//! Admission of a task module: size cap, binary format (no text, no components), the import
//! and export policy of the guest contract, then a compile under a time budget (or a load of
//! the cached artifact) and linking. Cheap checks run before the compile, so a module that
//! is refused for its imports never costs a compile. It does not store module bytes.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmparser::{Parser, Payload, TypeRef};
use wasmtime::{Engine, ExternType, Module};

use super::forms::{EngineForm, Form, Forms};
use super::{CacheStatus, Compiled, Sandbox, TaskModule};
use crate::domain::ModuleDigest;

/// The only import module besides WASI, and its functions.
pub(super) const HOST_MODULE: &str = "remotask";
pub(super) const HOST_FUNCTIONS: &[&str] = &["progress"];
const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// What an admitted module is: shown by `remotask inspect` and on upload.
#[derive(Debug, Clone, Serialize)]
pub struct AdmissionReport {
    pub digest: ModuleDigest,
    pub size_bytes: usize,
    pub exports: Vec<ExportInfo>,
    pub imports: Vec<ImportInfo>,
    /// Time to compile, or to load the cached artifact.
    pub compile_ms: f64,
    pub compile_cache: CacheStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportInfo {
    pub name: String,
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportInfo {
    pub module: String,
    pub name: String,
    pub kind: &'static str,
}

/// Why a module was refused. Every message says what to change.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AdmissionError {
    #[error("the module is empty (0 bytes)")]
    Empty,
    #[error("the module is {size} bytes, over the cap of {cap} bytes")]
    TooLarge { size: usize, cap: usize },
    #[error(
        "the module is in the wasm text format; upload the binary (e.g. `wat2wasm` or `wasm-tools parse`)"
    )]
    TextFormat,
    #[error("not a wasm binary: it does not start with the bytes \\0asm")]
    NotWasm,
    #[error("the module is truncated: {0}")]
    Truncated(String),
    #[error("components are not supported yet: upload a core wasm module built for wasm32-wasip1")]
    Component,
    #[error("unsupported wasm binary version {0}: only version 1 core modules are accepted")]
    UnknownVersion(u32),
    #[error("invalid module: {0}")]
    Invalid(String),
    #[error("the module imports what the sandbox does not provide: {}", list(.0))]
    ForbiddenImports(Vec<ImportInfo>),
    #[error("the module does not export {}: a task module is a WASI command (export `_start` and `memory`)", .0.join(" and "))]
    MissingExports(Vec<String>),
    #[error(
        "the export `_start` has the type {0}, but a WASI command's `_start` takes no parameters and returns nothing"
    )]
    StartSignature(String),
    #[error("compiling took longer than the budget of {0:?}; the module is too complex to accept")]
    CompileBudget(Duration),
    #[error("cannot link the module: {0}")]
    Link(String),
    #[error("cannot read the module: {0}")]
    Unreadable(String),
    #[error("the module bytes hash to {actual}, not to the expected digest {expected}")]
    DigestMismatch {
        expected: ModuleDigest,
        actual: ModuleDigest,
    },
}

fn list(imports: &[ImportInfo]) -> String {
    let names: Vec<String> = imports
        .iter()
        .map(|i| format!("{}.{} ({})", i.module, i.name, i.kind))
        .collect();
    names.join(", ")
}

/// Checks, compiles (or loads) and links `bytes`, remembering the result in the sandbox.
pub(super) fn admit(
    sandbox: &Sandbox,
    digest: ModuleDigest,
    bytes: &[u8],
) -> Result<TaskModule, AdmissionError> {
    let cap = sandbox.config().max_module_bytes;
    check_header(bytes, cap)?;
    let (imports, exports) = read_interface(bytes)?;
    check_policy(&imports, &exports)?;

    let started = Instant::now();
    let engine = sandbox.inner.engines.fuel();
    let (module, cache) = compile_cached(sandbox, engine, digest, bytes)?;
    let compile_ms = started.elapsed().as_secs_f64() * 1000.0;
    check_start(&module)?;
    let pre = engine
        .linker
        .instantiate_pre(&module)
        .map_err(|e| AdmissionError::Link(format!("{e:#}")))?;
    let report = AdmissionReport {
        digest,
        size_bytes: bytes.len(),
        exports,
        imports,
        compile_ms,
        compile_cache: cache,
    };
    let compiled = sandbox.remember(Compiled {
        digest,
        bytes: bytes.to_vec(),
        forms: Forms::with_fuel(Form { pre }),
        reaches_files: reaches_files(&report.imports),
        report,
    });
    Ok(TaskModule { compiled, cache })
}

/// WASI functions that cannot name a path nor tell whether a directory is open: a module
/// whose WASI imports are all here (stdio, args, env, clocks, randomness, exit) could not
/// reach a scratch directory, so its attempts are given none.
const NO_FILES: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_read",
    "fd_write",
    "proc_exit",
    "random_get",
    "sched_yield",
];

/// Whether a module imports a WASI function that could reach a scratch directory.
fn reaches_files(imports: &[ImportInfo]) -> bool {
    imports
        .iter()
        .any(|i| i.module == WASI_MODULE && !NO_FILES.contains(&i.name.as_str()))
}

fn check_header(bytes: &[u8], cap: usize) -> Result<(), AdmissionError> {
    if bytes.is_empty() {
        return Err(AdmissionError::Empty);
    }
    if bytes.len() > cap {
        return Err(AdmissionError::TooLarge {
            size: bytes.len(),
            cap,
        });
    }
    if bytes.trim_ascii_start().starts_with(b"(") {
        return Err(AdmissionError::TextFormat);
    }
    if !b"\0asm".starts_with(&bytes[..bytes.len().min(4)]) {
        return Err(AdmissionError::NotWasm);
    }
    if bytes.len() < 8 {
        return Err(AdmissionError::Truncated(format!(
            "{} bytes is shorter than the 8-byte header",
            bytes.len()
        )));
    }
    match [bytes[4], bytes[5], bytes[6], bytes[7]] {
        [1, 0, 0, 0] => Ok(()),
        [_, _, 1, 0] => Err(AdmissionError::Component),
        v => Err(AdmissionError::UnknownVersion(u32::from_le_bytes(v))),
    }
}

/// Reads imports and exports without compiling; malformed sections are refused here.
fn read_interface(bytes: &[u8]) -> Result<(Vec<ImportInfo>, Vec<ExportInfo>), AdmissionError> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(parse_error)? {
            Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let import = import.map_err(parse_error)?;
                    imports.push(ImportInfo {
                        module: import.module.to_owned(),
                        name: import.name.to_owned(),
                        kind: type_ref_kind(&import.ty),
                    });
                }
            }
            Payload::ExportSection(section) => {
                for export in section {
                    let export = export.map_err(parse_error)?;
                    let kind = match export.kind {
                        wasmparser::ExternalKind::Func => "func",
                        wasmparser::ExternalKind::Memory => "memory",
                        wasmparser::ExternalKind::Table => "table",
                        wasmparser::ExternalKind::Global => "global",
                        _ => "other",
                    };
                    exports.push(ExportInfo {
                        name: export.name.to_owned(),
                        kind,
                    });
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

fn type_ref_kind(ty: &TypeRef) -> &'static str {
    match ty {
        TypeRef::Func(_) => "func",
        TypeRef::Memory(_) => "memory",
        TypeRef::Table(_) => "table",
        TypeRef::Global(_) => "global",
        _ => "other",
    }
}

fn parse_error(e: wasmparser::BinaryReaderError) -> AdmissionError {
    let message = e.message().to_owned();
    if message.contains("unexpected end") {
        AdmissionError::Truncated(format!("{message} (at byte {})", e.offset()))
    } else {
        AdmissionError::Invalid(format!("{message} (at byte {})", e.offset()))
    }
}

fn check_policy(imports: &[ImportInfo], exports: &[ExportInfo]) -> Result<(), AdmissionError> {
    let forbidden: Vec<ImportInfo> = imports
        .iter()
        .filter(|i| {
            let allowed = i.kind == "func"
                && (i.module == WASI_MODULE
                    || (i.module == HOST_MODULE && HOST_FUNCTIONS.contains(&i.name.as_str())));
            !allowed
        })
        .cloned()
        .collect();
    if !forbidden.is_empty() {
        return Err(AdmissionError::ForbiddenImports(forbidden));
    }
    let has = |name: &str, kind: &str| exports.iter().any(|e| e.name == name && e.kind == kind);
    let missing: Vec<String> = [("_start", "func"), ("memory", "memory")]
        .into_iter()
        .filter(|(name, kind)| !has(name, kind))
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    if !missing.is_empty() {
        return Err(AdmissionError::MissingExports(missing));
    }
    Ok(())
}

/// `_start` takes nothing and returns nothing: called any other way, every attempt would fail
/// to link at run time.
fn check_start(module: &Module) -> Result<(), AdmissionError> {
    let Some(ExternType::Func(ty)) = module.get_export("_start") else {
        return Ok(());
    };
    if ty.params().len() == 0 && ty.results().len() == 0 {
        return Ok(());
    }
    let list = |types: &mut dyn Iterator<Item = wasmtime::ValType>| {
        types.map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    };
    Err(AdmissionError::StartSignature(format!(
        "({}) -> ({})",
        list(&mut ty.params()),
        list(&mut ty.results())
    )))
}

/// `bytes` compiled for `engine`: loaded from its artifact cache, or compiled and stored
/// there; where it came from.
pub(super) fn compile_cached(
    sandbox: &Sandbox,
    engine: &EngineForm,
    digest: ModuleDigest,
    bytes: &[u8],
) -> Result<(Module, CacheStatus), AdmissionError> {
    if let Some(module) = engine
        .disk
        .as_ref()
        .and_then(|d| d.load(&engine.engine, &digest))
    {
        return Ok((module, CacheStatus::Disk));
    }
    let module = compile(sandbox, &engine.engine, bytes)?;
    if let Some(disk) = &engine.disk {
        disk.store(&digest, &module);
    }
    Ok((module, CacheStatus::Miss))
}

/// Compiles on a thread of its own and gives up waiting after the budget. A compile that
/// overruns finishes in the background and is dropped.
fn compile(sandbox: &Sandbox, engine: &Engine, bytes: &[u8]) -> Result<Module, AdmissionError> {
    let (tx, rx) = mpsc::sync_channel(1);
    let engine = engine.clone();
    let owned = bytes.to_vec();
    thread::Builder::new()
        .name("remotask-compile".into())
        .spawn(move || {
            let _ = tx.send(Module::from_binary(&engine, &owned));
        })
        .map_err(|e| AdmissionError::Invalid(format!("cannot start a compile thread: {e}")))?;
    let budget = sandbox.config().compile_budget;
    match rx.recv_timeout(budget) {
        Ok(Ok(module)) => Ok(module),
        Ok(Err(e)) => Err(AdmissionError::Invalid(format!("{e:#}"))),
        Err(_) => Err(AdmissionError::CompileBudget(budget)),
    }
}

#[cfg(test)]
mod tests {
    use super::{ImportInfo, WASI_MODULE, reaches_files};

    fn imports(list: &[(&str, &str)]) -> Vec<ImportInfo> {
        list.iter()
            .map(|(module, name)| ImportInfo {
                module: (*module).to_owned(),
                name: (*name).to_owned(),
                kind: "func",
            })
            .collect()
    }

    #[test]
    fn only_a_module_that_could_name_a_path_or_a_directory_reaches_files() {
        let stdio = [
            (WASI_MODULE, "fd_read"),
            (WASI_MODULE, "fd_write"),
            (WASI_MODULE, "environ_get"),
            (WASI_MODULE, "environ_sizes_get"),
            ("remotask", "progress"),
        ];
        assert!(!reaches_files(&imports(&stdio)));
        assert!(!reaches_files(&[]));
        for reaching in [
            "path_open",
            "fd_prestat_get",
            "fd_prestat_dir_name",
            "fd_readdir",
            "fd_fdstat_get",
            "path_unlink_file",
        ] {
            let mut list = stdio.to_vec();
            list.push((WASI_MODULE, reaching));
            assert!(reaches_files(&imports(&list)), "{reaching}");
        }
    }
}
