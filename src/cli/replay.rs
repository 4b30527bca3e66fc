//! `remotask replay BUNDLE`: runs an attempt again from its repro bundle, locally and in the
//! same sandbox as `remotask run` (no server), giving the guest the recorded seed and clock
//! values, and says whether the reason, exit code, output and fuel are identical to the
//! recorded ones, or which one differs first. With other limits (`--fuel`, `--max-seconds`)
//! the differences are reported and are not a failure.
//!
//! Exit codes: 0 identical (or other limits asked for), 1 a difference, 2 remotask could not
//! replay (unreadable bundle, a newer format, a module that does not match its digest, an
//! attempt that is not replayable).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::domain::{Bundle, BundleHeader, LimitsOverride, Reason, output_digest};
use crate::sandbox::{AttemptReport, AttemptRequest, Sandbox, SandboxConfig};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The bundle (`remotask job bundle`).
    pub bundle: PathBuf,
    /// Write what the replay's guest wrote to stdout (its output) to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Replay with this fuel budget instead of the recorded one.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Replay with this wall-clock budget, in seconds, instead of the recorded one.
    #[arg(long)]
    pub max_seconds: Option<f64>,
    /// Print one JSON object: {identical, first_difference, fields, replay}.
    #[arg(long)]
    pub json: bool,
}

/// One compared field: its name, the recorded value and the replay's, shown.
struct Field {
    name: &'static str,
    recorded: String,
    replayed: String,
}

pub(super) fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.bundle)
        .with_context(|| format!("cannot read bundle {}", args.bundle.display()))?;
    let bundle =
        Bundle::decode(&bytes).with_context(|| format!("{} refused", args.bundle.display()))?;
    let h = &bundle.header;
    if let Some(why) = &h.recording.not_replayable {
        anyhow::bail!(
            "attempt {} of job {} is not replayable: {why}",
            h.attempt,
            h.job
        );
    }
    let other_limits = args.fuel.is_some() || args.max_seconds.is_some();
    let limits = LimitsOverride {
        fuel: args.fuel,
        max_seconds: args.max_seconds,
        ..LimitsOverride::default()
    }
    .over(h.limits)?;
    let sandbox = Sandbox::new(SandboxConfig {
        pool_slots: 0,
        ..SandboxConfig::default()
    })?;
    let module = sandbox
        .admit(&bundle.module)
        .context("the bundle's module was refused")?;
    let report = sandbox.run_blocking(
        &module,
        AttemptRequest {
            task_name: h.task.clone(),
            input: bundle.input.clone(),
            args: h.args.clone(),
            env: h.env.clone(),
            limits,
            replay: Some(h.recording.clone()),
            ..Default::default()
        },
    );
    if let Some(file) = &args.output {
        std::fs::write(file, &report.output)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    let fields = compare(h, &report);
    let first = fields.iter().find(|f| f.recorded != f.replayed);
    if args.json {
        let shown: Vec<_> = fields
            .iter()
            .map(|f| json!({"field": f.name, "recorded": f.recorded, "replay": f.replayed}))
            .collect();
        let v = json!({
            "identical": first.is_none(),
            "first_difference": first.map(|f| f.name),
            "other_limits": other_limits,
            "fields": shown,
            "replay": {
                "reason": report.reason,
                "trap_kind": report.trap_kind,
                "exit_code": report.exit_code,
                "message": report.message,
                "output_digest": output_digest(&report.output),
                "receipt": report.receipt,
            },
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        std::io::stderr().write_all(&report.stderr)?;
        print_text(h, &report, &fields, first, other_limits)?;
    }
    Ok(match first {
        Some(_) if !other_limits => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

/// The fields a replay must reproduce, in the order a difference is looked for.
fn compare(h: &BundleHeader, report: &AttemptReport) -> Vec<Field> {
    let reason = |r: Reason, kind: Option<String>| match kind {
        Some(k) => format!("{r} ({k})"),
        None => r.to_string(),
    };
    let exit = |c: Option<i32>| c.map_or_else(|| "-".to_owned(), |c| c.to_string());
    let fuel = |f: Option<u64>| f.map_or_else(|| "off".to_owned(), |f| f.to_string());
    let r = &h.result;
    vec![
        Field {
            name: "reason",
            recorded: reason(r.reason, r.trap_kind.map(|k| k.to_string())),
            replayed: reason(report.reason, report.trap_kind.map(|k| k.to_string())),
        },
        Field {
            name: "exit code",
            recorded: exit(r.exit_code),
            replayed: exit(report.exit_code),
        },
        Field {
            name: "output",
            recorded: format!("{} bytes, blake3 {}", r.output_bytes, r.output_digest),
            replayed: format!(
                "{} bytes, blake3 {}",
                report.output.len(),
                output_digest(&report.output)
            ),
        },
        Field {
            name: "fuel",
            recorded: fuel(r.fuel_consumed),
            replayed: fuel(report.receipt.fuel_consumed),
        },
    ]
}

fn print_text(
    h: &BundleHeader,
    report: &AttemptReport,
    fields: &[Field],
    first: Option<&Field>,
    other_limits: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "replay of attempt {} of job {} (task {}, {} clock reads recorded)",
        h.attempt,
        h.job,
        h.task,
        h.recording.clock_reads()
    )?;
    if h.remotask_version != env!("CARGO_PKG_VERSION") {
        writeln!(
            out,
            "note: recorded by remotask {}, replayed by {}: fuel may count differently",
            h.remotask_version,
            env!("CARGO_PKG_VERSION")
        )?;
    }
    if matches!(
        h.result.reason,
        Reason::Deadline | Reason::CpuLimit | Reason::Cancelled
    ) {
        writeln!(
            out,
            "note: the host stopped the attempt ({}); where a stop lands depends on the \
             machine's speed, so the replay's fuel and output may differ",
            h.result.reason
        )?;
    }
    for f in fields {
        let verdict = if f.recorded == f.replayed {
            "identical".to_owned()
        } else {
            format!("differs: replay {}", short(&f.replayed))
        };
        writeln!(out, "{:<10} {:<34} {verdict}", f.name, short(&f.recorded))?;
    }
    if let Some(message) = &report.message {
        writeln!(out, "message    {message}")?;
    }
    match first {
        None => writeln!(out, "identical: the replay reproduced the attempt")?,
        Some(f) if other_limits => writeln!(
            out,
            "replayed with other limits: the first difference is the {}",
            f.name
        )?,
        Some(f) => writeln!(
            out,
            "differs: the first difference is the {}: recorded {}, replay {}",
            f.name, f.recorded, f.replayed
        )?,
    }
    Ok(())
}

/// A field as the table shows it: a digest cut to its first 16 hex digits.
fn short(shown: &str) -> String {
    match shown.split_once("blake3 ") {
        Some((head, digest)) if digest.len() > 16 => format!("{head}blake3 {}…", &digest[..16]),
        _ => shown.to_owned(),
    }
}
