//! The bodies that flatten a `JobSpec` (submits and schedules) read as one struct would: every
//! field written is read back, unknown, duplicate and missing fields are refused with the
//! field named, errors inside a value keep their path, and the OpenAPI document describes
//! each body as one closed object.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};

use super::job::SUBMIT_FIELDS;
use super::schedule::SCHEDULE_FIELDS;
use super::{
    JobSpec, LimitsDto, ScheduleInput, ScheduleOptions, SubmitBatch, SubmitJob, SubmitOptions,
};
use crate::domain::RetryPolicy;
use crate::http::body::parse_json;

/// A job with every field set to something other than its default.
fn full_spec() -> JobSpec {
    JobSpec {
        task: "echo".into(),
        input: Some(json!({"n": 1})),
        input_text: Some("text".into()),
        input_base64: Some("AAE=".into()),
        args: vec!["-v".into()],
        env: [("A".to_owned(), "1".to_owned())].into(),
        queue: Some("q".into()),
        priority: -3,
        limits: Some(LimitsDto {
            fuel: Some(5),
            ..LimitsDto::default()
        }),
        retry: Some(RetryPolicy {
            retries: 7,
            ..RetryPolicy::default()
        }),
        context: Some("order-9".into()),
        concurrency_key: Some("order-9".into()),
    }
}

fn full_submit() -> SubmitJob {
    SubmitJob {
        job: full_spec(),
        submit: SubmitOptions {
            delay_seconds: Some(2.5),
            run_at: Some("2030-01-01T00:00:00Z".into()),
            hold: true,
            unique_key: Some("k".into()),
        },
    }
}

fn full_schedule() -> ScheduleInput {
    ScheduleInput {
        schedule: ScheduleOptions {
            name: Some("nightly".into()),
            cron: Some("0 3 * * *".into()),
            tz: Some("Europe/Paris".into()),
            minute: Some(vec![1]),
            hour: Some(vec![2]),
            day_of_month: Some(vec![3]),
            month: Some(vec![4]),
            day_of_week: Some(vec![5]),
            delay_seconds: Some(6.0),
            overlap: Some("allow".into()),
            catch_up: Some("all".into()),
            paused: true,
        },
        job: full_spec(),
    }
}

fn to_value(body: &impl Serialize) -> Value {
    serde_json::to_value(body).unwrap()
}

/// The message of the 400 answered to `body`.
fn refusal<T: serde::de::DeserializeOwned>(body: Value) -> String {
    match parse_json::<T>(body.to_string().as_bytes()) {
        Ok(_) => panic!("{body} was accepted"),
        Err(e) => {
            assert_eq!((e.status.as_u16(), e.code), (400, "invalid_json"));
            e.message
        }
    }
}

fn assert_reads_back_every_field<T>(full: &T, empty: &T, fields: &[&str])
where
    T: Serialize + serde::de::DeserializeOwned,
{
    let written = to_value(full);
    let keys: BTreeSet<&str> = written
        .as_object()
        .unwrap()
        .keys()
        .map(|k| &k[..])
        .collect();
    assert_eq!(keys, fields.iter().copied().collect(), "the fields listed");
    assert_eq!(keys.len(), fields.len(), "a field listed twice");
    let default = to_value(empty);
    for key in fields {
        assert_ne!(written[key], default[key], "{key} is not set by the test");
    }
    let read: T = parse_json(written.to_string().as_bytes()).unwrap();
    assert_eq!(to_value(&read), written);
}

#[test]
fn a_submit_reads_back_every_field_it_writes() {
    assert_reads_back_every_field(&full_submit(), &SubmitJob::default(), SUBMIT_FIELDS);
}

#[test]
fn a_schedule_reads_back_every_field_it_writes() {
    assert_reads_back_every_field(&full_schedule(), &ScheduleInput::default(), SCHEDULE_FIELDS);
}

#[test]
fn absent_fields_take_their_defaults_and_only_the_task_is_required() {
    let submit: SubmitJob = parse_json(br#"{"task": "echo"}"#).unwrap();
    let expected = SubmitJob {
        job: JobSpec {
            task: "echo".into(),
            ..JobSpec::default()
        },
        ..SubmitJob::default()
    };
    assert_eq!(to_value(&submit), to_value(&expected));
    assert!(refusal::<SubmitJob>(json!({"hold": true})).contains("missing field `task`"));
    assert!(refusal::<ScheduleInput>(json!({"name": "n"})).contains("missing field `task`"));
}

#[test]
fn an_unknown_field_is_refused_by_name_at_its_path() {
    let m = refusal::<SubmitJob>(json!({"task": "echo", "priorty": 1}));
    assert!(
        m.starts_with("invalid JSON body at `priorty`: unknown field `priorty`, expected one of `task`, `input`,"),
        "{m}"
    );
    let m = refusal::<SubmitBatch>(json!({"jobs": [{"task": "echo", "cron": "x"}]}));
    assert!(
        m.starts_with("invalid JSON body at `jobs[0].cron`: unknown field `cron`"),
        "{m}"
    );
    // A submit's own fields are not a schedule's, and the other way round.
    let m = refusal::<ScheduleInput>(json!({"task": "echo", "hold": true}));
    assert!(
        m.starts_with("invalid JSON body at `hold`: unknown field `hold`, expected one of `name`,"),
        "{m}"
    );
}

#[test]
fn an_error_inside_a_value_keeps_its_path() {
    for (body, path) in [
        (json!({"task": 5}), "`task`"),
        (
            json!({"task": "echo", "limits": {"fuel": "lots"}}),
            "`limits.fuel`",
        ),
        (json!({"task": "echo", "env": {"A": 1}}), "`env.A`"),
        (json!({"task": "echo", "args": [1]}), "`args[0]`"),
        (json!({"task": "echo", "hold": "yes"}), "`hold`"),
    ] {
        let m = refusal::<SubmitJob>(body);
        assert!(
            m.starts_with(&format!("invalid JSON body at {path}: ")),
            "{m}"
        );
    }
    for (body, path) in [
        (
            json!({"task": "echo", "retry": {"retries": "x"}}),
            "`retry.retries`",
        ),
        (json!({"task": "echo", "minute": "x"}), "`minute`"),
    ] {
        let m = refusal::<ScheduleInput>(body);
        assert!(
            m.starts_with(&format!("invalid JSON body at {path}: ")),
            "{m}"
        );
    }
}

#[test]
fn a_field_given_twice_is_refused() {
    for body in [
        r#"{"task": "echo", "task": "x"}"#,
        r#"{"task": "echo", "hold": true, "hold": false}"#,
    ] {
        let e = parse_json::<SubmitJob>(body.as_bytes()).err().unwrap();
        assert!(e.message.contains("duplicate field"), "{}", e.message);
    }
    let e = parse_json::<ScheduleInput>(br#"{"task": "echo", "cron": "x", "cron": "y"}"#)
        .err()
        .unwrap();
    assert!(
        e.message.contains("duplicate field `cron`"),
        "{}",
        e.message
    );
}

#[test]
fn the_openapi_document_describes_each_body_as_one_closed_object() {
    let doc = serde_json::to_value(crate::http::openapi()).unwrap();
    for (name, fields) in [
        ("SubmitJob", SUBMIT_FIELDS),
        ("ScheduleInput", SCHEDULE_FIELDS),
    ] {
        let schema = &doc["components"]["schemas"][name];
        assert_eq!(schema["type"], "object", "{name}");
        assert_eq!(schema["additionalProperties"], false, "{name}");
        let properties: BTreeSet<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| &k[..])
            .collect();
        assert_eq!(properties, fields.iter().copied().collect(), "{name}");
        assert!(
            schema["required"]
                .as_array()
                .unwrap()
                .contains(&json!("task"))
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for group in ["JobSpec", "SubmitOptions", "ScheduleOptions"] {
        assert!(
            !schemas.contains_key(group),
            "{group} is inlined, not a component"
        );
    }
}
