//! `ModuleDigest`: the blake3 digest that names a task module's bytes everywhere (blob store,
//! compiled cache, jobs pinned at submit). Parsed once at the edge, then trusted.

use std::fmt;
use std::str::FromStr;

/// The blake3 digest of a module's bytes, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleDigest([u8; 32]);

/// A string that is not a module digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid module digest {0:?}: expected 64 lowercase hex characters")]
pub struct DigestError(pub String);

impl ModuleDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64-character lowercase hex form.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl FromStr for ModuleDigest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lowercase_hex =
            s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !lowercase_hex {
            return Err(DigestError(s.to_owned()));
        }
        blake3::Hash::from_hex(s)
            .map(|h| Self(*h.as_bytes()))
            .map_err(|_| DigestError(s.to_owned()))
    }
}

impl fmt::Display for ModuleDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ModuleDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleDigest({})", self.to_hex())
    }
}

impl serde::Serialize for ModuleDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ModuleDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let d = ModuleDigest::of(b"hello");
        assert_eq!(d.to_hex().parse::<ModuleDigest>().unwrap(), d);
        assert_eq!(d.to_hex(), blake3::hash(b"hello").to_hex().as_str());
    }

    #[test]
    fn rejects_uppercase_short_and_non_hex() {
        let upper = ModuleDigest::of(b"x").to_hex().to_uppercase();
        for bad in ["", "abc", &upper, &"g".repeat(64)] {
            assert_eq!(
                bad.parse::<ModuleDigest>(),
                Err(DigestError(bad.to_owned()))
            );
        }
    }
}
