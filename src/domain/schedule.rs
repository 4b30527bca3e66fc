//! Schedule specs: when a schedule fires. Three kinds, all pure:
//! - a cron expression (5 fields, or 6 with seconds first) in an IANA time zone, parsed by
//!   `croner`; day of month and day of week combine as in Vixie cron (either matches);
//! - the older service's field sets (`minute`, `hour`, `day_of_month`, `month`,
//!   `day_of_week` with Monday = 0), where every given field must match and a field left out
//!   that is finer than the finest given one is pinned to its minimum (`month = [5]` fires
//!   once a year, on May 1 at 00:00), while one left out that is coarser matches anything;
//! - a one-shot delay: it fires once, `delay_seconds` after the schedule is created.
//!
//! [`Spec::next_after`] is strictly after the time it is given.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::{JobId, LimitsOverride, QueueName, RetryPolicy, ScheduleName, TaskName, Timestamp};

/// What each fire of a schedule submits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTemplate {
    pub task: TaskName,
    pub input: Vec<u8>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub queue: Option<QueueName>,
    pub priority: i32,
    pub limits: LimitsOverride,
    pub retry: Option<RetryPolicy>,
    pub context: Option<String>,
    #[serde(default)]
    pub concurrency_key: Option<String>,
}

impl JobTemplate {
    /// A job of `task` with `input` and every other field at its default.
    pub fn of(task: TaskName, input: Vec<u8>) -> Self {
        JobTemplate {
            task,
            input,
            args: Vec::new(),
            env: Vec::new(),
            queue: None,
            priority: 0,
            limits: LimitsOverride::default(),
            retry: None,
            context: None,
            concurrency_key: None,
        }
    }
}

/// What a fire does while the schedule's previous job is still live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The fire is skipped (counted, not run).
    #[default]
    Skip,
    /// The fire submits another job.
    Allow,
}

/// What happens to fire times missed while no server was running (or the schedule was due
/// for longer than [`ON_TIME`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed fires are dropped; the schedule goes on from now.
    None,
    /// The latest missed fire runs once.
    #[default]
    One,
    /// Every missed fire runs (at most [`MAX_CATCH_UP`]).
    All,
}

/// A schedule as stored. `next_fire` is `None` when it will not fire again (a delay that
/// fired, a spec with no more times).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    pub name: ScheduleName,
    pub spec: SpecDef,
    pub job: JobTemplate,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub paused: bool,
    pub next_fire: Option<Timestamp>,
    pub last_fire: Option<Timestamp>,
    pub last_job: Option<JobId>,
    /// Jobs submitted by fires so far.
    pub fires: u64,
    /// Fire times passed over: by the catch-up policy, by overlap `skip`, or because the
    /// job could not be submitted (see `last_error`).
    pub skipped: u64,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A fire this late is still on time (the scheduler is not missing it, just busy).
pub const ON_TIME: Duration = Duration::from_secs(60);
/// The most missed fires `CatchUp::All` runs at once.
pub const MAX_CATCH_UP: usize = 1000;

/// The fires due at `now` and the next fire time after them.
#[derive(Debug, Clone, PartialEq)]
pub struct FirePlan {
    /// Fire times to submit a job for, oldest first.
    pub fires: Vec<Timestamp>,
    /// Fire times that were due but dropped by the catch-up policy.
    pub missed: u64,
    /// The next fire time; `None` when the spec has no more (a delay that fired).
    pub next: Option<Timestamp>,
}

/// Decides, from the stored next fire time, which fires are due at `now`. Pure.
pub fn plan_fires(spec: &Spec, due: Timestamp, now: Timestamp, catch_up: CatchUp) -> FirePlan {
    let mut times = vec![due];
    if !spec.is_one_shot() {
        let mut t = due;
        while let Some(next) = spec.next_after(t) {
            if next > now || times.len() > MAX_CATCH_UP * 2 {
                break;
            }
            times.push(next);
            t = next;
        }
    }
    let total = times.len() as u64;
    let fires: Vec<Timestamp> = match catch_up {
        CatchUp::All => times.into_iter().rev().take(MAX_CATCH_UP).rev().collect(),
        CatchUp::One => times.pop().into_iter().collect(),
        CatchUp::None => times
            .pop()
            .filter(|t| now.0 - t.0 <= ON_TIME.as_millis() as i64)
            .into_iter()
            .collect(),
    };
    let next = if spec.is_one_shot() {
        None
    } else {
        spec.next_after(now)
    };
    FirePlan {
        missed: total - fires.len() as u64,
        fires,
        next,
    }
}

/// The unique key of one fire: `schedule:<name>:<fire time, RFC 3339 in UTC>`.
pub fn fire_key(name: &ScheduleName, fire: Timestamp) -> String {
    let time = DateTime::<Utc>::from_timestamp_millis(fire.0).map_or_else(
        || fire.0.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    format!("schedule:{name}:{time}")
}

/// A spec as written by users and stored: exactly one of `cron`, the field sets, or
/// `delay_seconds`; `tz` for the first two (UTC when absent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpecDef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minute: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hour: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day_of_month: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub month: Option<Vec<u32>>,
    /// Monday = 0 ... Sunday = 6.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day_of_week: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<f64>,
}

/// Why a spec cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule spec: {0}")]
pub struct SpecError(pub String);

/// A parsed, valid spec.
#[derive(Debug, Clone)]
pub struct Spec {
    def: SpecDef,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Cron(Box<croner::Cron>, Tz),
    Fields(Fields, Tz),
    Delay(Duration),
}

/// The field sets with the pinning rule applied: `None` matches anything.
#[derive(Debug, Clone, PartialEq)]
struct Fields {
    minute: Vec<u32>,
    hour: Vec<u32>,
    day_of_month: Option<Vec<u32>>,
    month: Option<Vec<u32>>,
    day_of_week: Option<Vec<u32>>,
}

/// How far ahead field sets are searched: eight years hold every weekday/leap-day combination.
const SEARCH_DAYS: i64 = 8 * 366;

impl SpecDef {
    /// Checks the spec and prepares it for evaluation.
    pub fn parse(&self) -> Result<Spec, SpecError> {
        let fields_given = self.minute.is_some()
            || self.hour.is_some()
            || self.day_of_month.is_some()
            || self.month.is_some()
            || self.day_of_week.is_some();
        let kinds = [
            self.cron.is_some(),
            fields_given,
            self.delay_seconds.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(SpecError(
                "give exactly one of: cron, field sets (minute, hour, day_of_month, month, \
                 day_of_week), delay_seconds"
                    .into(),
            ));
        }
        let tz = match self.tz.as_deref() {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| SpecError(format!("unknown time zone {name:?}")))?,
        };
        let kind = if let Some(expr) = &self.cron {
            let cron = croner::parser::CronParser::builder()
                .seconds(croner::parser::Seconds::Optional)
                .year(croner::parser::Year::Disallowed)
                .build()
                .parse(expr)
                .map_err(|e| SpecError(format!("cron {expr:?}: {e}")))?;
            Kind::Cron(Box::new(cron), tz)
        } else if let Some(seconds) = self.delay_seconds {
            if self.tz.is_some() {
                return Err(SpecError("a delay has no time zone".into()));
            }
            if !(seconds.is_finite() && (0.0..=366.0 * 86_400.0).contains(&seconds)) {
                return Err(SpecError(format!(
                    "delay_seconds must be 0 to one year, got {seconds}"
                )));
            }
            Kind::Delay(Duration::from_secs_f64(seconds))
        } else {
            Kind::Fields(self.fields()?, tz)
        };
        Ok(Spec {
            def: self.clone(),
            kind,
        })
    }

    fn fields(&self) -> Result<Fields, SpecError> {
        let check = |name: &str, v: &Option<Vec<u32>>, lo: u32, hi: u32| {
            if let Some(values) = v {
                if values.is_empty() {
                    return Err(SpecError(format!("{name} must not be empty")));
                }
                if let Some(bad) = values.iter().find(|x| !(lo..=hi).contains(*x)) {
                    return Err(SpecError(format!("{name} {bad} is not in {lo}..={hi}")));
                }
            }
            Ok(v.as_ref().map(|v| {
                let mut v = v.clone();
                v.sort_unstable();
                v.dedup();
                v
            }))
        };
        let minute = check("minute", &self.minute, 0, 59)?;
        let hour = check("hour", &self.hour, 0, 23)?;
        let day_of_month = check("day_of_month", &self.day_of_month, 1, 31)?;
        let month = check("month", &self.month, 1, 12)?;
        let day_of_week = check("day_of_week", &self.day_of_week, 0, 6)?;
        // The finest field given: 0 minute, 1 hour, 2 day, 3 month. Finer ones left out are
        // pinned to their minimum; coarser ones left out match anything.
        let finest = if minute.is_some() {
            0
        } else if hour.is_some() {
            1
        } else if day_of_month.is_some() || day_of_week.is_some() {
            2
        } else {
            3
        };
        let all = |lo: u32, hi: u32| (lo..=hi).collect::<Vec<_>>();
        Ok(Fields {
            minute: minute.unwrap_or_else(|| if finest > 0 { vec![0] } else { all(0, 59) }),
            hour: hour.unwrap_or_else(|| if finest > 1 { vec![0] } else { all(0, 23) }),
            day_of_month: match (day_of_month, &day_of_week) {
                (Some(d), _) => Some(d),
                (None, None) if finest > 2 => Some(vec![1]),
                (None, _) => None,
            },
            month,
            day_of_week,
        })
    }
}

fn to_ts<T: TimeZone>(t: &DateTime<T>) -> Timestamp {
    Timestamp(t.timestamp_millis())
}

impl Spec {
    pub fn def(&self) -> &SpecDef {
        &self.def
    }

    /// True for a spec that fires once (a delay).
    pub fn is_one_shot(&self) -> bool {
        matches!(self.kind, Kind::Delay(_))
    }

    /// The first fire time strictly after `now`; `None` if there is none (a cron expression
    /// that never matches, field sets like February 30).
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Delay(d) => Some(now.plus(*d)),
            Kind::Cron(cron, tz) => {
                let start = Utc.timestamp_millis_opt(now.0).single()?.with_timezone(tz);
                let next = cron.find_next_occurrence(&start, false).ok()?;
                Some(to_ts(&next))
            }
            Kind::Fields(f, tz) => next_fields(f, tz, now),
        }
    }

    /// The next `n` fire times after `now` (fewer if the spec runs out).
    pub fn preview(&self, now: Timestamp, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(n);
        let mut t = now;
        while out.len() < n {
            let Some(next) = self.next_after(t) else {
                break;
            };
            out.push(next);
            if self.is_one_shot() {
                break;
            }
            t = next;
        }
        out
    }
}

fn next_fields(f: &Fields, tz: &Tz, now: Timestamp) -> Option<Timestamp> {
    let local_now = Utc.timestamp_millis_opt(now.0).single()?.with_timezone(tz);
    let mut day: NaiveDate = local_now.date_naive();
    for _ in 0..SEARCH_DAYS {
        let matches = f.month.as_ref().is_none_or(|m| m.contains(&day.month()))
            && f.day_of_month
                .as_ref()
                .is_none_or(|d| d.contains(&day.day()))
            && f.day_of_week
                .as_ref()
                .is_none_or(|w| w.contains(&day.weekday().num_days_from_monday()));
        if matches {
            for &h in &f.hour {
                for &m in &f.minute {
                    let Some(naive) = day.and_hms_opt(h, m, 0) else {
                        continue;
                    };
                    // A local time skipped by a daylight-saving change does not fire; one that
                    // happens twice fires at its first occurrence.
                    let Some(t) = tz.from_local_datetime(&naive).earliest() else {
                        continue;
                    };
                    let ts = to_ts(&t);
                    if ts > now {
                        return Some(ts);
                    }
                }
            }
        }
        day = day.succ_opt()?;
    }
    None
}

/// Seconds and minutes of a timestamp in UTC, for messages.
pub fn describe_utc(t: Timestamp) -> String {
    match Utc.timestamp_millis_opt(t.0).single() {
        Some(d) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        None => t.0.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;

    trait EveryMinute {
        fn second_free_minute(&mut self);
    }

    impl EveryMinute for SpecDef {
        /// Every minute: a cron of `* * * * *`.
        fn second_free_minute(&mut self) {
            self.cron = Some("* * * * *".into());
        }
    }

    fn fields(f: impl FnOnce(&mut SpecDef)) -> Spec {
        let mut def = SpecDef::default();
        f(&mut def);
        def.parse().unwrap()
    }

    fn next(spec: &Spec, after_ms: i64) -> i64 {
        spec.next_after(Timestamp(after_ms)).unwrap().0
    }

    /// The older service's "Cron jobs" examples, each with its exact expected time
    /// (time 0 is 1970-01-01T00:00:00Z, a Thursday).
    #[test]
    fn the_seed_cron_job_examples() {
        let s = fields(|d| d.minute = Some(vec![0, 10]));
        assert_eq!(next(&s, 0), 10 * MIN);
        assert_eq!(next(&s, 10 * MIN), HOUR);

        let s = fields(|d| d.hour = Some(vec![2, 13]));
        assert_eq!(next(&s, 0), 2 * HOUR);
        assert_eq!(next(&s, 2 * HOUR), 13 * HOUR);

        // month = (1, 5, 12): May 1 (day 120), then December 1 (day 334), at 00:00.
        let s = fields(|d| d.month = Some(vec![1, 5, 12]));
        assert_eq!(next(&s, 0), 120 * DAY);
        assert_eq!(next(&s, next(&s, 0)), 334 * DAY);

        // day_of_week = (0, 2, 4, 5), Monday = 0: Jan 2 (Fri), 3 (Sat), 5 (Mon), 7 (Wed).
        let s = fields(|d| d.day_of_week = Some(vec![0, 2, 4, 5]));
        assert_eq!(next(&s, 0), DAY);
        assert_eq!(next(&s, DAY), 2 * DAY);
        assert_eq!(next(&s, 2 * DAY), 4 * DAY);
        assert_eq!(next(&s, 4 * DAY), 6 * DAY);

        let s = fields(|d| d.day_of_month = Some(vec![1, 12, 21, 30]));
        assert_eq!(next(&s, 0), 11 * DAY);
        assert_eq!(next(&s, 12 * DAY), 20 * DAY);

        // Combined: hour is coarser than minute, so it is free.
        let s = fields(|d| {
            d.minute = Some(vec![10]);
            d.day_of_month = Some(vec![1, 12, 21, 30]);
        });
        assert_eq!(next(&s, 0), 10 * MIN);
        assert_eq!(next(&s, 10 * MIN), HOUR + 10 * MIN);

        let s = fields(|d| {
            d.minute = Some(vec![10]);
            d.hour = Some(vec![4]);
            d.day_of_month = Some(vec![1, 12, 21, 30]);
        });
        assert_eq!(next(&s, 0), 4 * HOUR + 10 * MIN);
        assert_eq!(next(&s, 10 * MIN), 4 * HOUR + 10 * MIN);

        // A delay fires that long after the time it is given.
        let s = fields(|d| d.delay_seconds = Some(10.0));
        assert_eq!(next(&s, 0), 10_000);
        assert_eq!(next(&s, 1_000), 11_000);
        assert!(s.is_one_shot());
    }

    #[test]
    fn next_after_is_strictly_after() {
        let s = fields(|d| d.minute = Some(vec![10]));
        assert_eq!(next(&s, 10 * MIN), HOUR + 10 * MIN);
        assert_eq!(next(&s, 10 * MIN - 1), 10 * MIN);
        let c = SpecDef {
            cron: Some("*/15 * * * *".into()),
            ..SpecDef::default()
        }
        .parse()
        .unwrap();
        assert_eq!(next(&c, 0), 15 * MIN);
        assert_eq!(next(&c, 15 * MIN), 30 * MIN);
        assert_eq!(next(&c, 15 * MIN - 1), 15 * MIN);
    }

    #[test]
    fn cron_in_a_time_zone_follows_its_clock_changes() {
        let c = SpecDef {
            cron: Some("0 9 * * MON-FRI".into()),
            tz: Some("Europe/Berlin".into()),
            ..SpecDef::default()
        }
        .parse()
        .unwrap();
        // 2026-03-27 (Friday) 12:00 UTC: next is Monday 2026-03-30 09:00 CEST = 07:00 UTC
        // (clocks went forward on Sunday the 29th).
        let fri_noon = Utc.with_ymd_and_hms(2026, 3, 27, 12, 0, 0).unwrap();
        let want = Utc.with_ymd_and_hms(2026, 3, 30, 7, 0, 0).unwrap();
        assert_eq!(
            next(&c, fri_noon.timestamp_millis()),
            want.timestamp_millis()
        );
        // In winter 09:00 CET is 08:00 UTC.
        let jan = Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
        let want = Utc.with_ymd_and_hms(2026, 1, 5, 8, 0, 0).unwrap();
        assert_eq!(next(&c, jan.timestamp_millis()), want.timestamp_millis());
    }

    #[test]
    fn six_fields_give_seconds() {
        let c = SpecDef {
            cron: Some("*/5 * * * * *".into()),
            ..SpecDef::default()
        }
        .parse()
        .unwrap();
        assert_eq!(next(&c, 0), 5_000);
        assert_eq!(
            c.preview(Timestamp(0), 3),
            [Timestamp(5_000), Timestamp(10_000), Timestamp(15_000)]
        );
    }

    #[test]
    fn impossible_field_sets_have_no_next_time() {
        let s = fields(|d| {
            d.month = Some(vec![2]);
            d.day_of_month = Some(vec![30]);
        });
        assert_eq!(s.next_after(Timestamp(0)), None);
        // February 29 is found years ahead.
        let s = fields(|d| {
            d.month = Some(vec![2]);
            d.day_of_month = Some(vec![29]);
        });
        let leap = Utc.with_ymd_and_hms(1972, 2, 29, 0, 0, 0).unwrap();
        assert_eq!(next(&s, 0), leap.timestamp_millis());
    }

    #[test]
    fn catch_up_decides_which_missed_fires_run() {
        let every_minute = fields(|d| d.second_free_minute());
        let due = Timestamp(10 * MIN);
        let now = Timestamp(13 * MIN + 5_000);
        let all = plan_fires(&every_minute, due, now, CatchUp::All);
        let times: Vec<i64> = all.fires.iter().map(|t| t.0 / MIN).collect();
        assert_eq!(times, [10, 11, 12, 13]);
        assert_eq!((all.missed, all.next), (0, Some(Timestamp(14 * MIN))));
        let one = plan_fires(&every_minute, due, now, CatchUp::One);
        assert_eq!((one.fires, one.missed), (vec![Timestamp(13 * MIN)], 3));
        // 13:05 is on time for the 13:00 fire; after a long downtime nothing runs.
        let none = plan_fires(&every_minute, due, now, CatchUp::None);
        assert_eq!((none.fires, none.missed), (vec![Timestamp(13 * MIN)], 3));
        let hourly = fields(|d| d.minute = Some(vec![0]));
        let late = plan_fires(
            &hourly,
            Timestamp(0),
            Timestamp(2 * HOUR + 2 * MIN),
            CatchUp::None,
        );
        assert_eq!((late.fires.len(), late.missed), (0, 3));
        assert_eq!(late.next, Some(Timestamp(3 * HOUR)));
        // A delay fires once and has no next time.
        let delay = fields(|d| d.delay_seconds = Some(10.0));
        let once = plan_fires(&delay, Timestamp(10_000), Timestamp(10_000), CatchUp::All);
        assert_eq!((once.fires, once.next), (vec![Timestamp(10_000)], None));
    }

    #[test]
    fn fire_keys_name_the_schedule_and_the_time() {
        let name: ScheduleName = "nightly".parse().unwrap();
        assert_eq!(
            fire_key(&name, Timestamp(DAY + 1)),
            "schedule:nightly:1970-01-02T00:00:00.001Z"
        );
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let err = |d: SpecDef| d.parse().unwrap_err().to_string();
        assert!(err(SpecDef::default()).contains("exactly one of"));
        assert!(
            err(SpecDef {
                cron: Some("* * *".into()),
                ..SpecDef::default()
            })
            .contains("cron \"* * *\"")
        );
        assert!(
            err(SpecDef {
                minute: Some(vec![60]),
                ..SpecDef::default()
            })
            .contains("minute 60 is not in 0..=59")
        );
        assert!(
            err(SpecDef {
                day_of_week: Some(vec![]),
                ..SpecDef::default()
            })
            .contains("must not be empty")
        );
        assert!(
            err(SpecDef {
                cron: Some("* * * * *".into()),
                tz: Some("Mars/Olympus".into()),
                ..SpecDef::default()
            })
            .contains("unknown time zone")
        );
        assert!(
            err(SpecDef {
                cron: Some("* * * * *".into()),
                minute: Some(vec![1]),
                ..SpecDef::default()
            })
            .contains("exactly one of")
        );
    }
}
