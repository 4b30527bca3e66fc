//! The stored text of a job's limits and retry policy: fields in a fixed order, separated by
//! `;`, instead of JSON objects that repeat every field's name. Also the JSON columns'
//! codec both backends share (`json`, `parse_json`).
//!
//! Every job row carries both, and a job's row is written three times (submitted, claimed,
//! ended): as JSON they were about 340 of its 550 bytes, so most of what the single writer
//! copied, wrote to the log and checkpointed. Here they take about 120.
//!
//! ```text
//! limits: fuel;max_seconds;memory_bytes;stdout_bytes;stderr_bytes[;cpu_ms;metering]
//!         10000000000;30;268435456;1048576;1048576
//!         10000000000;30;268435456;1048576;1048576;2500;cpu
//! retry:  retries;backoff_seconds;backoff_factor;backoff_max_seconds;jitter;escalate;retry_on
//!         3;5;2;3600;0.1;1;retryable_error,deadline,out_of_fuel,cpu_limit,lease_lost,host_error
//! ```
//!
//! The last two fields of limits are written only when they differ from the defaults (no CPU
//! budget, `fuel` metering); an empty `cpu_ms` is no CPU budget. Seconds and factors are written as the shortest decimal that reads back as the same `f64`,
//! so a value read is the value written. Rows of schema versions before 7 hold JSON, which
//! starts with `{` and is still read.

use super::{StoreError, StoreResult};
use crate::domain::{Limits, Metering, RetryPolicy};

/// A value as the JSON text of a column.
pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// The JSON text of a column of `table`, read; a row that does not read is corrupt.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    s: &str,
) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        table,
        message: format!("{e}: {s}"),
    })
}

/// `limits` as stored.
pub(crate) fn limits_text(l: &Limits) -> String {
    let mut text = format!(
        "{};{};{};{};{}",
        l.fuel,
        l.max_seconds(),
        l.memory_bytes,
        l.stdout_bytes,
        l.stderr_bytes
    );
    if l.cpu_time.is_some() || l.metering != Metering::Fuel {
        let cpu = l.cpu_ms().map(|ms| ms.to_string()).unwrap_or_default();
        text.push_str(&format!(";{cpu};{}", l.metering.as_str()));
    }
    text
}

/// `retry` as stored.
pub(crate) fn retry_text(r: &RetryPolicy) -> String {
    let mut text = format!(
        "{};{};{};{};{};{};",
        r.retries,
        r.backoff_seconds,
        r.backoff_factor,
        r.backoff_max_seconds,
        r.jitter,
        u8::from(r.escalate)
    );
    for (i, reason) in r.retry_on.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(reason.as_str());
    }
    text
}

/// Reads limits written by [`limits_text`], or as JSON by an older version.
pub(crate) fn parse_limits(text: &str) -> Result<Limits, String> {
    if text.starts_with('{') {
        return serde_json::from_str(text).map_err(|e| e.to_string());
    }
    let count = text.split(';').count();
    let mut fields = Fields::new(text, if count == 7 { 7 } else { 5 })?;
    let (fuel, max_seconds) = (fields.number("fuel")?, fields.number("max_seconds")?);
    let memory = fields.number("memory_bytes")?;
    let (stdout, stderr) = (
        fields.number("stdout_bytes")?,
        fields.number("stderr_bytes")?,
    );
    let limits =
        Limits::new(fuel, max_seconds, memory, stdout, stderr).map_err(|e| e.to_string())?;
    if count == 5 {
        return Ok(limits);
    }
    let cpu_ms = match fields.next("cpu_ms")? {
        "" => None,
        ms => Some(
            ms.parse()
                .map_err(|e| format!("cpu_ms {ms:?} is not a number: {e}"))?,
        ),
    };
    let metering = fields.next("metering")?.parse::<Metering>()?;
    Ok(limits
        .with_cpu_ms(cpu_ms)
        .map_err(|e| e.to_string())?
        .with_metering(metering))
}

/// Reads a retry policy written by [`retry_text`], or as JSON by an older version.
pub(crate) fn parse_retry(text: &str) -> Result<RetryPolicy, String> {
    if text.starts_with('{') {
        return serde_json::from_str(text).map_err(|e| e.to_string());
    }
    let mut fields = Fields::new(text, 7)?;
    let retries = fields.number("retries")?;
    let backoff_seconds = fields.number("backoff_seconds")?;
    let backoff_factor = fields.number("backoff_factor")?;
    let backoff_max_seconds = fields.number("backoff_max_seconds")?;
    let jitter = fields.number("jitter")?;
    let escalate = match fields.next("escalate")? {
        "0" => false,
        "1" => true,
        other => return Err(format!("escalate is neither 0 nor 1: {other:?}")),
    };
    let names = fields.next("retry_on")?;
    let retry_on = if names.is_empty() {
        Vec::new()
    } else {
        names.split(',').map(str::parse).collect::<Result<_, _>>()?
    };
    Ok(RetryPolicy {
        retries,
        backoff_seconds,
        backoff_factor,
        backoff_max_seconds,
        jitter,
        retry_on,
        escalate,
    })
}

/// The `;`-separated fields of one value, exactly `count` of them.
struct Fields<'a>(std::str::Split<'a, char>);

impl<'a> Fields<'a> {
    fn new(text: &'a str, count: usize) -> Result<Self, String> {
        let found = text.split(';').count();
        if found != count {
            return Err(format!("{found} fields where {count} belong: {text:?}"));
        }
        Ok(Self(text.split(';')))
    }

    fn next(&mut self, name: &str) -> Result<&'a str, String> {
        self.0.next().ok_or_else(|| format!("{name} is missing"))
    }

    fn number<T: std::str::FromStr>(&mut self, name: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let field = self.next(name)?;
        field
            .parse()
            .map_err(|e| format!("{name} {field:?} is not a number: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Reason;

    #[test]
    fn limits_read_back_as_written() {
        let cases = [
            Limits::default(),
            Limits::new(1, 0.001, 64 << 10, 0, 0).unwrap(),
            Limits::new(u64::MAX, 0.1 + 0.2, 4 << 30, 256 << 20, 7).unwrap(),
            Limits::new(5, Limits::MAX_SECONDS, 1 << 20, 1, 2).unwrap(),
            Limits::default().with_cpu_ms(Some(2500)).unwrap(),
            Limits::default().with_metering(Metering::Cpu),
            Limits::default()
                .with_cpu_ms(Some(1))
                .unwrap()
                .with_metering(Metering::Cpu),
        ];
        for limits in cases {
            let text = limits_text(&limits);
            assert_eq!(parse_limits(&text).unwrap(), limits, "{text}");
        }
        assert_eq!(
            limits_text(&Limits::default()),
            "10000000000;30;268435456;1048576;1048576"
        );
        assert_eq!(
            limits_text(&Limits::default().with_metering(Metering::Cpu)),
            "10000000000;30;268435456;1048576;1048576;;cpu"
        );
        assert!(parse_limits("1;1;65536;0;0;5").is_err(), "six fields");
        assert!(parse_limits("1;1;65536;0;0;0;cpu").is_err(), "cpu_ms 0");
        assert!(
            parse_limits("1;1;65536;0;0;;wall").is_err(),
            "no such metering"
        );
    }

    #[test]
    fn retry_policies_read_back_as_written() {
        let cases = [
            RetryPolicy::default(),
            RetryPolicy {
                retries: 0,
                retry_on: Vec::new(),
                escalate: false,
                ..RetryPolicy::default()
            },
            RetryPolicy {
                retries: 17,
                backoff_seconds: 0.25,
                backoff_factor: 1.0 / 3.0,
                backoff_max_seconds: 1e9,
                jitter: 0.0,
                retry_on: vec![Reason::Trap, Reason::RetryableError],
                escalate: true,
            },
        ];
        for policy in cases {
            let text = retry_text(&policy);
            assert_eq!(parse_retry(&text).unwrap(), policy, "{text}");
        }
        assert_eq!(
            retry_text(&RetryPolicy::default()),
            "3;5;2;3600;0.1;1;retryable_error,deadline,out_of_fuel,cpu_limit,lease_lost,host_error"
        );
    }

    #[test]
    fn json_of_older_rows_is_still_read() {
        let limits = Limits::new(7, 2.5, 1 << 20, 10, 20).unwrap();
        let json = serde_json::to_string(&limits).unwrap();
        assert!(json.starts_with('{'));
        assert_eq!(parse_limits(&json).unwrap(), limits);
        let policy = RetryPolicy {
            retries: 1,
            ..RetryPolicy::default()
        };
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(parse_retry(&json).unwrap(), policy);
    }

    #[test]
    fn damaged_text_is_refused_with_the_field_named() {
        let refused = [
            (
                parse_limits("1;2;3;4").unwrap_err(),
                "4 fields where 5 belong",
            ),
            (
                parse_limits("x;30;268435456;1;1").unwrap_err(),
                "fuel \"x\" is not a number",
            ),
            (
                parse_limits("1;0;268435456;1;1").unwrap_err(),
                "max_seconds must be",
            ),
            (
                parse_retry("3;5;2;3600;0.1;2;deadline").unwrap_err(),
                "escalate is neither 0 nor 1",
            ),
            (
                parse_retry("3;5;2;3600;0.1;1;deadline,sleepy").unwrap_err(),
                "no such reason: \"sleepy\"",
            ),
            (
                parse_retry("3;5;2;3600;0.1;1;deadline;x").unwrap_err(),
                "8 fields where 7 belong",
            ),
        ];
        for (error, expected) in refused {
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }
}
