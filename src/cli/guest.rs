//! The flags that say what a guest is given: its input (stdin), its arguments (argv[1..]) and
//! its environment. Declared once, for `remotask run` and for the job flags of `job submit`
//! and `schedule add|update`, and read here into checked values. What becomes of them is the
//! command's business: `run` hands the bytes to a local attempt, the client commands put
//! them on the wire. Limits are not here: `run` has its own flags with the sandbox's
//! defaults, while a submitted job leaves unset limits to the server.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

/// Input, arguments and environment for a guest.
#[derive(Debug, Clone, Args)]
pub struct GuestArgs {
    /// The input: a JSON value, passed to the guest's stdin.
    #[arg(long, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Read the input bytes from a file ("-" for stdin), passed as they are.
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// An argument for the guest (argv[1..]); repeat for more.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// An environment variable K=V for the guest; repeat for more. Nothing else is visible.
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
}

/// The input as it was given.
#[derive(Debug)]
pub(super) enum Input {
    /// No `--input` and no `--input-file`: the guest's stdin is empty.
    None,
    /// `--input`: the text as given, and the JSON value it was checked to be.
    Json {
        text: String,
        value: serde_json::Value,
    },
    /// `--input-file`: the bytes as they are.
    Bytes(Vec<u8>),
}

impl Input {
    /// The bytes the guest reads on stdin (JSON as the text given, not re-encoded).
    pub(super) fn into_bytes(self) -> Vec<u8> {
        match self {
            Input::None => Vec::new(),
            Input::Json { text, .. } => text.into_bytes(),
            Input::Bytes(bytes) => bytes,
        }
    }
}

impl GuestArgs {
    /// Checks `--input` as JSON, or reads `--input-file` ("-" is stdin).
    pub(super) fn input(&self) -> anyhow::Result<Input> {
        if let Some(text) = &self.input {
            let value = serde_json::from_str(text).context("--input is not valid JSON")?;
            return Ok(Input::Json {
                text: text.clone(),
                value,
            });
        }
        match &self.input_file {
            Some(p) if p.as_os_str() == "-" => {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .context("cannot read stdin")?;
                Ok(Input::Bytes(buf))
            }
            Some(p) => std::fs::read(p)
                .map(Input::Bytes)
                .with_context(|| format!("cannot read input file {}", p.display())),
            None => Ok(Input::None),
        }
    }

    /// The `--env` flags as pairs, in the order given.
    pub(super) fn env_pairs(&self) -> anyhow::Result<Vec<(String, String)>> {
        env_pairs(&self.env)
    }
}

/// `K=V` flags as pairs, in the order given; an empty key or a missing `=` is refused.
pub(super) fn env_pairs(env: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    env.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--env {kv:?} is not of the form KEY=VALUE"),
        })
        .collect()
}
