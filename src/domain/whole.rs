//! Whole numbers as JSON spells them: JSON has one number type, so `3`, `3.0` and `3e0` are
//! the same integer (and JSON Schema's `integer` says so). serde's integers refuse a number
//! written with a fraction or an exponent; [`Whole`] takes any number that is whole and in
//! range, and refuses every other value as serde would. It does not round: `3.5` is refused.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

/// An integer of type `T` read from any whole JSON number that fits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whole<T>(pub T);

impl<'de, T: TryFrom<i64> + TryFrom<u64>> Deserialize<'de> for Whole<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(WholeVisitor(PhantomData))
            .map(Whole)
    }
}

/// For `#[serde(deserialize_with)]` on an integer field.
pub fn int<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    Whole::deserialize(deserializer).map(|w| w.0)
}

/// For a `u64` field whose wire type is a 64-bit integer (JSON Schema's `int64`): any whole
/// number from 0 to `i64::MAX`.
pub fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let n: i64 = int(deserializer)?;
    u64::try_from(n).map_err(|_| de::Error::invalid_value(Unexpected::Signed(n), &"a count"))
}

/// For `#[serde(default, deserialize_with)]` on an optional integer field.
pub fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    Option::<Whole<T>>::deserialize(deserializer).map(|o| o.map(|w| w.0))
}

/// For an optional list of integers.
pub fn option_vec<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    let list = Option::<Vec<Whole<T>>>::deserialize(deserializer)?;
    Ok(list.map(|l| l.into_iter().map(|w| w.0).collect()))
}

struct WholeVisitor<T>(PhantomData<T>);

impl<T> WholeVisitor<T> {
    fn out_of_range<E: de::Error>(&self, unexpected: Unexpected<'_>) -> E {
        E::invalid_value(unexpected, &"an integer in range")
    }
}

impl<'de, T: TryFrom<i64> + TryFrom<u64>> Visitor<'de> for WholeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| self.out_of_range(Unexpected::Signed(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| self.out_of_range(Unexpected::Unsigned(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // 2^63 and 2^64 are exact in f64; a whole f64 below them converts without loss.
        if v.fract() != 0.0 || !v.is_finite() {
            return Err(E::invalid_type(Unexpected::Float(v), &self));
        }
        if (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            self.visit_u64(v as u64)
        } else if (-9_223_372_036_854_775_808.0..0.0).contains(&v) {
            self.visit_i64(v as i64)
        } else {
            Err(self.out_of_range(Unexpected::Float(v)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Whole;

    fn read<T: TryFrom<i64> + TryFrom<u64>>(json: &str) -> Result<T, String> {
        serde_json::from_str::<Whole<T>>(json)
            .map(|w| w.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_whole_number_is_an_integer_however_it_is_written() {
        assert_eq!(read::<u64>("2588"), Ok(2588));
        assert_eq!(read::<u64>("2588.0"), Ok(2588));
        assert_eq!(read::<u64>("2.588e3"), Ok(2588));
        assert_eq!(read::<i32>("-155.0"), Ok(-155));
        assert_eq!(read::<u32>("0.0"), Ok(0));
    }

    #[test]
    fn a_fraction_a_number_out_of_range_and_a_string_are_refused() {
        assert!(
            read::<u64>("2588.5")
                .unwrap_err()
                .contains("floating point")
        );
        assert!(read::<u32>("4294967296").unwrap_err().contains("in range"));
        assert!(read::<u32>("-1.0").unwrap_err().contains("in range"));
        assert!(read::<u64>("1e300").unwrap_err().contains("in range"));
        assert!(read::<i32>("\"7\"").unwrap_err().contains("an integer"));
        assert!(read::<u64>("null").is_err());
    }
}
