//! What makes an attempt replayable: everything the host gave its guest at run time that is
//! not already in the job ([`Recording`]: the seed of its random generator and the values its
//! clocks returned), and what the attempt ran under and produced beyond the attempt record
//! ([`AttemptReplay`]: its limits and a digest of its output). Plain data; the sandbox makes
//! recordings and replays them, the stores keep them with the attempt, a bundle carries them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Limits;

/// The most clock values one attempt's recording keeps (both clocks together). An attempt
/// whose guest reads the clocks more often is marked not replayable, and says why.
pub const MAX_CLOCK_READS: usize = 4096;

/// What the host gave one attempt's guest at run time, in the order the guest asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    /// The seed of the guest's random generator (ChaCha20): every byte `random_get` returns
    /// follows from it.
    pub seed: Seed,
    /// The wall clock's values, in nanoseconds since the Unix epoch, one per read.
    #[serde(default)]
    pub wall: Vec<u64>,
    /// The monotonic clock's values, in nanoseconds since the attempt started, one per read.
    #[serde(default)]
    pub monotonic: Vec<u64>,
    /// Set when the recording is incomplete: why the attempt cannot be replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_replayable: Option<String>,
}

impl Recording {
    /// An empty recording of a generator seeded with `seed`.
    pub fn new(seed: Seed) -> Self {
        Recording {
            seed,
            wall: Vec::new(),
            monotonic: Vec::new(),
            not_replayable: None,
        }
    }

    /// How many clock values it holds.
    pub fn clock_reads(&self) -> usize {
        self.wall.len() + self.monotonic.len()
    }
}

/// 32 bytes that seed an attempt's random generator; hex on the wire and in the stores.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Seed(pub [u8; 32]);

impl Seed {
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::str::FromStr for Seed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("a seed is 64 hex digits, not {s:?}");
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Seed(out))
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seed({})", self.to_hex())
    }
}

impl Serialize for Seed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Seed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What an attempt record keeps so the attempt can be replayed: the limits it ran under (a
/// job's limits may change between attempts), a digest of its output, and its recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptReplay {
    pub limits: Limits,
    /// The blake3 digest of the attempt's output (stdout), 64 hex digits.
    pub output_digest: String,
    pub recording: Recording,
}

/// The blake3 digest of an attempt's output, as [`AttemptReplay::output_digest`] keeps it.
pub fn output_digest(output: &[u8]) -> String {
    blake3::hash(output).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_is_64_hex_digits_both_ways() {
        let seed = Seed(std::array::from_fn(|i| i as u8 * 7));
        let json = serde_json::to_string(&seed).unwrap();
        assert_eq!(json.len(), 66);
        assert_eq!(serde_json::from_str::<Seed>(&json).unwrap(), seed);
        assert!("00".parse::<Seed>().is_err());
        assert!("zz".repeat(32).parse::<Seed>().is_err());
    }

    #[test]
    fn a_recording_keeps_its_values_in_json() {
        let mut r = Recording::new(Seed([1; 32]));
        r.wall = vec![1_700_000_000_000_000_000, 1_700_000_000_000_000_001];
        r.monotonic = vec![5, 9];
        let back: Recording = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.clock_reads(), 4);
    }
}
