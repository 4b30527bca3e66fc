//! `remotask run` and `remotask inspect`: one module, locally, no server. `run` prints the
//! guest's output on stdout and a one-line receipt on stderr (or one JSON object with
//! `--json`); its exit code tells the reason (table in README.md and on [`exit_code_for`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine as _;
use clap::Args;
use serde_json::json;

use super::guest::GuestArgs;
use crate::domain::{Limits, Metering, Reason};
use crate::sandbox::{AttemptReport, AttemptRequest, Sandbox, SandboxConfig};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The module (.wasm binary).
    pub module: PathBuf,
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Fuel budget, roughly one unit per wasm instruction (with `--metering fuel`).
    #[arg(long, default_value_t = Limits::default().fuel)]
    pub fuel: u64,
    /// CPU-time budget in milliseconds, in either metering.
    #[arg(long)]
    pub cpu_ms: Option<u64>,
    /// How computation is counted: `fuel` (deterministic) or `cpu` (no fuel, faster).
    #[arg(long, default_value = "fuel", value_parser = super::remote::parse_metering)]
    pub metering: Metering,
    /// Wall-clock budget in seconds.
    #[arg(long, default_value_t = Limits::default().max_seconds())]
    pub max_seconds: f64,
    /// Memory limit in MiB.
    #[arg(long, default_value_t = Limits::default().memory_bytes >> 20)]
    pub memory_mib: u64,
    /// stdout cap in bytes.
    #[arg(long, default_value_t = Limits::default().stdout_bytes)]
    pub stdout_cap: u64,
    /// argv[0] of the guest (the file name without extension by default).
    #[arg(long)]
    pub task_name: Option<String>,
    /// Print one JSON object {reason, trap_kind, exit_code, message, output, stderr, receipt}.
    #[arg(long)]
    pub json: bool,
}

/// The process exit code for an attempt's reason: 0 completed, 1 guest_error,
/// 75 retryable_error, 3 trap, 4 out_of_fuel or cpu_limit, 5 deadline, 6 memory_limit, 7 output_limit,
/// 8 cancelled, 2 host_error (and any failure of remotask itself).
pub fn exit_code_for(reason: Reason) -> u8 {
    match reason {
        Reason::Completed => 0,
        Reason::GuestError => 1,
        Reason::RetryableError => 75,
        Reason::Trap => 3,
        Reason::OutOfFuel | Reason::CpuLimit => 4,
        Reason::Deadline => 5,
        Reason::MemoryLimit => 6,
        Reason::OutputLimit => 7,
        Reason::Cancelled | Reason::LeaseLost => 8,
        Reason::HostError => super::EXIT_FAILURE,
    }
}

pub(super) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let limits = Limits::new(
        args.fuel,
        args.max_seconds,
        args.memory_mib
            .checked_mul(1 << 20)
            .context("--memory-mib is too large")?,
        args.stdout_cap,
        Limits::default().stderr_bytes,
    )?
    .with_cpu_ms(args.cpu_ms)?
    .with_metering(args.metering);
    let input = args.guest.input()?.into_bytes();
    let env = args.guest.env_pairs()?;
    let bytes = read_module(&args.module)?;
    let sandbox = Sandbox::new(SandboxConfig {
        pool_slots: 0,
        ..SandboxConfig::default()
    })?;
    let module = sandbox
        .admit(&bytes)
        .with_context(|| format!("{} was refused", args.module.display()))?;
    let task_name = args.task_name.clone().unwrap_or_else(|| {
        args.module
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "task".into())
    });
    let report = sandbox.run_blocking(
        &module,
        AttemptRequest {
            task_name,
            input,
            args: args.guest.args,
            env,
            limits,
            ..Default::default()
        },
    );
    if args.json {
        println!("{}", serde_json::to_string(&report_json(&report))?);
    } else {
        std::io::stdout().write_all(&report.output)?;
        std::io::stderr().write_all(&report.stderr)?;
        eprintln!("{}", receipt_line(&report));
    }
    Ok(ExitCode::from(exit_code_for(report.reason)))
}

pub(super) fn inspect(path: &Path, as_json: bool) -> anyhow::Result<ExitCode> {
    let bytes = read_module(path)?;
    let sandbox = Sandbox::new(SandboxConfig {
        pool_slots: 0,
        ..SandboxConfig::default()
    })?;
    let module = sandbox
        .admit(&bytes)
        .with_context(|| format!("{} was refused", path.display()))?;
    let r = module.report();
    if as_json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("module   {}", path.display());
    println!("digest   {}", r.digest);
    println!("size     {} bytes", r.size_bytes);
    println!("compile  {:.1} ms", r.compile_ms);
    println!(
        "exports  {}",
        r.exports
            .iter()
            .map(|e| format!("{} ({})", e.name, e.kind))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "imports  {} from wasi_snapshot_preview1",
        r.imports
            .iter()
            .filter(|i| i.module == "wasi_snapshot_preview1")
            .count()
    );
    for i in r
        .imports
        .iter()
        .filter(|i| i.module != "wasi_snapshot_preview1")
    {
        println!("         {}.{} ({})", i.module, i.name, i.kind);
    }
    Ok(ExitCode::SUCCESS)
}

fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read module {}", path.display()))
}

/// Text as a JSON string when it is UTF-8, else base64 with an `_encoding` marker.
fn bytes_json(bytes: &[u8]) -> (serde_json::Value, Option<&'static str>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (json!(s), None),
        Err(_) => (
            json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
            Some("base64"),
        ),
    }
}

fn report_json(r: &AttemptReport) -> serde_json::Value {
    let (output, output_encoding) = bytes_json(&r.output);
    let (stderr, stderr_encoding) = bytes_json(&r.stderr);
    let mut v = json!({
        "reason": r.reason,
        "exit_code": r.exit_code,
        "message": r.message,
        "output": output,
        "stderr": stderr,
        "stderr_truncated": r.stderr_truncated,
        "receipt": r.receipt,
    });
    if let Some(kind) = r.trap_kind {
        v["trap_kind"] = json!(kind);
    }
    if let Some(e) = output_encoding {
        v["output_encoding"] = json!(e);
    }
    if let Some(e) = stderr_encoding {
        v["stderr_encoding"] = json!(e);
    }
    v
}

fn receipt_line(r: &AttemptReport) -> String {
    let mut reason = r.reason.to_string();
    if let Some(kind) = r.trap_kind {
        reason = format!("{reason} ({kind})");
    }
    if let Some(message) = &r.message {
        reason = format!("{reason}: {message}");
    }
    let c = &r.receipt;
    let fuel = c
        .fuel_consumed
        .map_or_else(|| "off".to_owned(), |f| f.to_string());
    format!(
        "remotask: {reason} | exit {} | fuel {fuel} | cpu {:.2} ms | peak memory {:.1} MiB | wall {:.2} ms | instantiate {:.2} ms | cache {}",
        r.exit_code
            .map_or_else(|| "-".to_owned(), |c| c.to_string()),
        c.cpu_us as f64 / 1000.0,
        c.peak_memory_bytes as f64 / (1 << 20) as f64,
        c.wall_us as f64 / 1000.0,
        c.instantiate_us as f64 / 1000.0,
        c.compile_cache.as_str(),
    )
}
