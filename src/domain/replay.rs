//! What makes an attempt replayable: everything the host gave its guest at run time that is
//! not already in the job ([`Recording`]: the seed of its random generator and the values its
//! clocks returned), and what the attempt ran under and produced beyond the attempt record
//! ([`AttemptReplay`]: its limits and a digest of its output). Plain data; the sandbox makes
//! recordings and replays them, the stores keep them with the attempt, a bundle carries them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Limits, Metering};

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

/// The first byte of the compact form, its version. The JSON of older rows starts with `{`.
const COMPACT_V1: u8 = 1;

/// Flags of the compact form.
const DIGEST_AS_TEXT: u8 = 1;
const HAS_CPU_TIME: u8 = 2;
const NOT_REPLAYABLE: u8 = 4;
const METERING_CPU: u8 = 8;

impl AttemptReplay {
    /// The compact form the stores keep with each attempt (about 100 bytes for an attempt
    /// that read no clock, a third of its JSON): the version byte `1`, the seed's 32 bytes,
    /// a flags byte, the output digest's 32 bytes (or its text, length first, if it is not a
    /// digest), the limits as LEB128 integers (fuel, `max_seconds` as seconds and
    /// nanoseconds, the CPU time likewise when there is one, memory, stdout and stderr
    /// bytes), each clock's values (a count, then each value's difference from the one
    /// before, zigzagged), and why it is not replayable (length first) when it is not.
    pub fn encode(&self) -> Vec<u8> {
        let r = &self.recording;
        let l = &self.limits;
        let mut out = Vec::with_capacity(96 + 3 * r.clock_reads());
        out.push(COMPACT_V1);
        out.extend_from_slice(&r.seed.0);
        let digest = blake3::Hash::from_hex(&self.output_digest).ok();
        let mut flags = 0;
        if digest.is_none() {
            flags |= DIGEST_AS_TEXT;
        }
        if l.cpu_time.is_some() {
            flags |= HAS_CPU_TIME;
        }
        if r.not_replayable.is_some() {
            flags |= NOT_REPLAYABLE;
        }
        if l.metering == Metering::Cpu {
            flags |= METERING_CPU;
        }
        out.push(flags);
        match digest {
            Some(d) => out.extend_from_slice(d.as_bytes()),
            None => put_text(&mut out, &self.output_digest),
        }
        put(&mut out, l.fuel);
        put_duration(&mut out, l.max_time);
        if let Some(cpu) = l.cpu_time {
            put_duration(&mut out, cpu);
        }
        for n in [l.memory_bytes, l.stdout_bytes, l.stderr_bytes] {
            put(&mut out, n);
        }
        for clock in [&r.wall, &r.monotonic] {
            put(&mut out, clock.len() as u64);
            let mut last = 0u64;
            for &v in clock {
                let delta = v.wrapping_sub(last) as i64;
                put(&mut out, ((delta << 1) ^ (delta >> 63)) as u64);
                last = v;
            }
        }
        if let Some(why) = &r.not_replayable {
            put_text(&mut out, why);
        }
        out
    }

    /// An attempt's replay record from what a store kept: the compact form of
    /// [`AttemptReplay::encode`], or the JSON that rows written before it hold.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.first() {
            Some(b'{') => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Some(&COMPACT_V1) => {
                let mut r = Reader(&bytes[1..]);
                let decoded = r.replay()?;
                if !r.0.is_empty() {
                    return Err(format!("{} bytes after the replay record", r.0.len()));
                }
                Ok(decoded)
            }
            Some(v) => Err(format!("unknown replay record format {v}")),
            None => Err("an empty replay record".into()),
        }
    }
}

/// Appends `n` as LEB128.
fn put(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_duration(out: &mut Vec<u8>, d: Duration) {
    put(out, d.as_secs());
    put(out, u64::from(d.subsec_nanos()));
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Reads the compact form from the front of a slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("the replay record ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn int(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.bytes(1)?[0];
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("an integer of the replay record is too long".into())
    }

    fn duration(&mut self) -> Result<Duration, String> {
        let secs = self.int()?;
        let nanos = u32::try_from(self.int()?)
            .ok()
            .filter(|n| *n < 1_000_000_000)
            .ok_or("a duration's nanoseconds are out of range")?;
        Ok(Duration::new(secs, nanos))
    }

    fn text(&mut self) -> Result<String, String> {
        let len = usize::try_from(self.int()?).map_err(|_| "a text is too long")?;
        String::from_utf8(self.bytes(len)?.to_vec()).map_err(|_| "a text is not UTF-8".into())
    }

    fn clock(&mut self) -> Result<Vec<u64>, String> {
        let count = usize::try_from(self.int()?).map_err(|_| "too many clock values")?;
        if count > MAX_CLOCK_READS {
            return Err(format!("{count} clock values, more than {MAX_CLOCK_READS}"));
        }
        let mut values = Vec::with_capacity(count);
        let mut last = 0u64;
        for _ in 0..count {
            let z = self.int()?;
            let delta = ((z >> 1) as i64) ^ -((z & 1) as i64);
            last = last.wrapping_add(delta as u64);
            values.push(last);
        }
        Ok(values)
    }

    fn replay(&mut self) -> Result<AttemptReplay, String> {
        let seed = Seed(self.bytes(32)?.try_into().expect("32 bytes"));
        let flags = self.bytes(1)?[0];
        let output_digest = if flags & DIGEST_AS_TEXT != 0 {
            self.text()?
        } else {
            blake3::Hash::from_bytes(self.bytes(32)?.try_into().expect("32 bytes"))
                .to_hex()
                .to_string()
        };
        let fuel = self.int()?;
        let max_time = self.duration()?;
        let cpu_time = if flags & HAS_CPU_TIME != 0 {
            Some(self.duration()?)
        } else {
            None
        };
        let limits = Limits {
            fuel,
            cpu_time,
            metering: if flags & METERING_CPU != 0 {
                Metering::Cpu
            } else {
                Metering::Fuel
            },
            max_time,
            memory_bytes: self.int()?,
            stdout_bytes: self.int()?,
            stderr_bytes: self.int()?,
        };
        let wall = self.clock()?;
        let monotonic = self.clock()?;
        let not_replayable = if flags & NOT_REPLAYABLE != 0 {
            Some(self.text()?)
        } else {
            None
        };
        Ok(AttemptReplay {
            limits,
            output_digest,
            recording: Recording {
                seed,
                wall,
                monotonic,
                not_replayable,
            },
        })
    }
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

    fn replay(
        limits: Limits,
        digest: String,
        wall: Vec<u64>,
        monotonic: Vec<u64>,
    ) -> AttemptReplay {
        AttemptReplay {
            limits,
            output_digest: digest,
            recording: Recording {
                seed: Seed(std::array::from_fn(|i| 255 - i as u8)),
                wall,
                monotonic,
                not_replayable: None,
            },
        }
    }

    #[test]
    fn the_compact_form_gives_back_every_field_and_is_a_third_of_the_json() {
        let plain = replay(Limits::default(), output_digest(b"out"), vec![], vec![]);
        let bytes = plain.encode();
        assert_eq!(AttemptReplay::decode(&bytes).unwrap(), plain);
        let json = serde_json::to_vec(&plain).unwrap();
        assert!(
            bytes.len() * 3 <= json.len(),
            "{} vs {}",
            bytes.len(),
            json.len()
        );

        let mut odd = replay(
            Limits::new(7, 1.25, 1 << 20, 1, 300_000)
                .unwrap()
                .with_cpu_ms(Some(1_500))
                .unwrap()
                .with_metering(Metering::Cpu),
            "not a digest".into(),
            vec![
                1_700_000_000_000_000_000,
                1_699_999_999_999_999_999,
                u64::MAX,
                0,
            ],
            vec![0, 5, 5, 3],
        );
        odd.recording.not_replayable = Some("read the clocks 4097 times ✓".into());
        let bytes = odd.encode();
        assert_eq!(AttemptReplay::decode(&bytes).unwrap(), odd);
        // Older rows hold JSON.
        let json = serde_json::to_vec(&odd).unwrap();
        assert_eq!(AttemptReplay::decode(&json).unwrap(), odd);
        // Cut short, too long, another version: refused, never misread.
        for cut in 0..bytes.len() {
            assert!(
                AttemptReplay::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(AttemptReplay::decode(&longer).is_err());
        let mut newer = bytes;
        newer[0] = 2;
        assert!(
            AttemptReplay::decode(&newer)
                .unwrap_err()
                .contains("format 2")
        );
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
