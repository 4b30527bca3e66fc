//! The repro bundle: one file holding everything one attempt ran with and what it produced,
//! so the attempt can be replayed anywhere (`remotask replay`). Format version 1:
//!
//! ```text
//! remotask-bundle 1\n          the magic and the format version, one line
//! {...}\n                      the header: one line of JSON (BundleHeader)
//! <module><input><log>         raw bytes, as long as the header says, in this order
//! ```
//!
//! The header comes first and gives every length, so a bundle can be written and read as a
//! stream. A reader refuses a newer format version, trailing or missing bytes, and a module
//! whose blake3 digest is not the one the header names. Encoding and decoding only; the
//! server assembles bundles, the CLI replays them.

use serde::{Deserialize, Serialize};

use super::{JobId, Limits, ModuleDigest, Reason, Recording, Timestamp, TrapKind};

/// The format version this build writes, and the newest it reads.
pub const BUNDLE_VERSION: u32 = 1;
const MAGIC: &str = "remotask-bundle";
/// The longest header a reader accepts (the clock values of a recording at its limit fit
/// many times over).
const MAX_HEADER: usize = 8 << 20;

/// A decoded bundle: the header and the three byte sections.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub header: BundleHeader,
    pub module: Vec<u8>,
    /// The guest's stdin.
    pub input: Vec<u8>,
    /// The attempt's stderr, as kept (cut at its cap).
    pub log: Vec<u8>,
}

/// What the attempt ran with and what it produced; the lengths of the byte sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleHeader {
    /// The version of remotask that ran the attempt's server.
    pub remotask_version: String,
    pub job: JobId,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `argv[0]` of the guest.
    pub task: String,
    pub module: ModuleSection,
    pub input_bytes: u64,
    /// `argv[1..]` of the guest.
    pub args: Vec<String>,
    /// The guest's whole environment.
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    /// The seed of the guest's random generator and the values its clocks returned.
    pub recording: Recording,
    pub result: BundleResult,
}

/// The module section: its digest and length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleSection {
    pub digest: ModuleDigest,
    pub bytes: u64,
}

/// What the attempt produced, as recorded when it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleResult {
    pub reason: Reason,
    pub trap_kind: Option<TrapKind>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    /// The blake3 digest of the output (stdout), 64 hex digits.
    pub output_digest: String,
    pub output_bytes: u64,
    /// `None` when the attempt ran without fuel metering.
    pub fuel_consumed: Option<u64>,
    /// The length of the log section.
    pub log_bytes: u64,
    pub log_truncated: bool,
    pub worker: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

/// Why bytes are not a bundle this build can read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BundleError {
    #[error("not a remotask bundle: it does not start with the line `{MAGIC} N`")]
    NotABundle,
    #[error(
        "the bundle is format version {found}, newer than this remotask reads (up to version \
         {BUNDLE_VERSION}): replay it with a newer remotask"
    )]
    NewerVersion { found: u32 },
    #[error("the bundle's header is invalid: {0}")]
    Header(String),
    #[error("the bundle is truncated: its {0} section is shorter than its header says")]
    Truncated(&'static str),
    #[error("the bundle has {0} bytes after its last section")]
    Trailing(usize),
    #[error(
        "the bundle's module hashes to {actual}, not to the digest {expected} its header \
         names: the module was changed or damaged"
    )]
    DigestMismatch {
        expected: ModuleDigest,
        actual: ModuleDigest,
    },
}

impl Bundle {
    /// The bundle as bytes: the version line, the header line, then the sections.
    pub fn encode(&self) -> Vec<u8> {
        let mut header = self.header.clone();
        header.module.bytes = self.module.len() as u64;
        header.input_bytes = self.input.len() as u64;
        header.result.log_bytes = self.log.len() as u64;
        let json = serde_json::to_vec(&header).expect("a bundle header serializes");
        let mut out = Vec::with_capacity(
            32 + json.len() + self.module.len() + self.input.len() + self.log.len(),
        );
        out.extend_from_slice(format!("{MAGIC} {BUNDLE_VERSION}\n").as_bytes());
        out.extend_from_slice(&json);
        out.push(b'\n');
        out.extend_from_slice(&self.module);
        out.extend_from_slice(&self.input);
        out.extend_from_slice(&self.log);
        out
    }

    /// Reads a bundle, checking its version, its lengths and its module's digest.
    pub fn decode(bytes: &[u8]) -> Result<Bundle, BundleError> {
        let (first, rest) = line(bytes, 64).ok_or(BundleError::NotABundle)?;
        let version = std::str::from_utf8(first)
            .ok()
            .and_then(|l| l.strip_prefix(MAGIC))
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or(BundleError::NotABundle)?;
        if version > BUNDLE_VERSION {
            return Err(BundleError::NewerVersion { found: version });
        }
        let (json, rest) = line(rest, MAX_HEADER)
            .ok_or_else(|| BundleError::Header("no header line".to_owned()))?;
        let header: BundleHeader =
            serde_json::from_slice(json).map_err(|e| BundleError::Header(e.to_string()))?;
        let (module, rest) = section(rest, header.module.bytes, "module")?;
        let (input, rest) = section(rest, header.input_bytes, "input")?;
        let (log, rest) = section(rest, header.result.log_bytes, "log")?;
        if !rest.is_empty() {
            return Err(BundleError::Trailing(rest.len()));
        }
        let actual = ModuleDigest::of(module);
        if actual != header.module.digest {
            return Err(BundleError::DigestMismatch {
                expected: header.module.digest,
                actual,
            });
        }
        Ok(Bundle {
            module: module.to_vec(),
            input: input.to_vec(),
            log: log.to_vec(),
            header,
        })
    }
}

/// The bytes before the first newline (at most `max`) and those after it.
fn line(bytes: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().take(max + 1).position(|b| *b == b'\n')?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

fn section<'a>(
    bytes: &'a [u8],
    len: u64,
    name: &'static str,
) -> Result<(&'a [u8], &'a [u8]), BundleError> {
    let len = usize::try_from(len).map_err(|_| BundleError::Truncated(name))?;
    if bytes.len() < len {
        return Err(BundleError::Truncated(name));
    }
    Ok(bytes.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Seed;

    fn bundle() -> Bundle {
        let module = b"\0asm\x01\0\0\0".to_vec();
        Bundle {
            header: BundleHeader {
                remotask_version: "0.1.0".into(),
                job: JobId::from_u128(1 << 80),
                attempt: 2,
                task: "echo".into(),
                module: ModuleSection {
                    digest: ModuleDigest::of(&module),
                    bytes: 0,
                },
                input_bytes: 0,
                args: vec!["a".into()],
                env: vec![("K".into(), "V".into())],
                limits: Limits::default(),
                recording: Recording::new(Seed([3; 32])),
                result: BundleResult {
                    reason: Reason::Trap,
                    trap_kind: Some(TrapKind::Unreachable),
                    exit_code: None,
                    message: Some("boom".into()),
                    output_digest: crate::domain::output_digest(b""),
                    output_bytes: 0,
                    fuel_consumed: Some(42),
                    log_bytes: 0,
                    log_truncated: false,
                    worker: "w".into(),
                    started_at: Timestamp(1),
                    finished_at: Timestamp(2),
                },
            },
            module,
            input: b"in\nput".to_vec(),
            log: b"panicked\n".to_vec(),
        }
    }

    #[test]
    fn a_bundle_reads_back_what_was_written() {
        let b = bundle();
        let bytes = b.encode();
        assert!(bytes.starts_with(b"remotask-bundle 1\n{"));
        let back = Bundle::decode(&bytes).unwrap();
        assert_eq!(back.module, b.module);
        assert_eq!(back.input, b.input);
        assert_eq!(back.log, b.log);
        assert_eq!(back.header.module.bytes, 8);
        assert_eq!(back.header.result.fuel_consumed, Some(42));
    }

    #[test]
    fn a_newer_version_a_changed_module_and_cut_bytes_are_refused() {
        let bytes = bundle().encode();
        let newer = [b"remotask-bundle 2".as_slice(), &bytes[17..]].concat();
        let err = Bundle::decode(&newer).unwrap_err();
        assert_eq!(err, BundleError::NewerVersion { found: 2 });
        assert!(err.to_string().contains("newer remotask"), "{err}");

        let mut changed = bytes.clone();
        let at = bytes.len() - 6 - 9 - 1; // the module's last byte
        changed[at] ^= 1;
        assert!(matches!(
            Bundle::decode(&changed),
            Err(BundleError::DigestMismatch { .. })
        ));

        assert_eq!(
            Bundle::decode(&bytes[..bytes.len() - 1]),
            Err(BundleError::Truncated("log"))
        );
        assert_eq!(
            Bundle::decode(&[bytes.as_slice(), b"x"].concat()),
            Err(BundleError::Trailing(1))
        );
        assert_eq!(Bundle::decode(b"PK\x03\x04"), Err(BundleError::NotABundle));
    }
}
