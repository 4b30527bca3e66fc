//! The request bodies made exact where a field's Rust type says less than the server checks:
//! an environment's variable names, base64 input, at most one of the three inputs, a retry
//! policy's fields and bounds, the shape of a schedule's time zone and its field-set ranges,
//! a cancel's "at least one filter", and an ended attempt's report unless it was
//! interrupted. A generic client or a fuzzer that follows the
//! document then sends only what the server takes. What a body means stays with its
//! handler; this file only writes down what the handler already refuses.

use serde_json::{Value, json};
use utoipa::openapi::schema::{
    AdditionalProperties, Array, ArrayItems, Object, ObjectBuilder, Schema, Type,
};
use utoipa::openapi::{OpenApi, Ref, RefOr};

use crate::domain::{Reason, TrapKind};

/// Names of variables: not empty, without `=` or NUL (as `http/jobs.rs` checks them).
const ENV_NAME: &str = "^[^=\\u0000]+$";
/// At most this many variables (`MAX_ENV` in `http/jobs.rs`).
const MAX_ENV: usize = 256;
/// Canonical padded base64, as the server's decoder takes it: the last character before
/// padding has no bits beyond the data.
const BASE64: &str =
    "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";

/// A task, queue or worker name.
const NAME: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";

/// An IANA time zone's name, as chrono-tz spells them.
const TZ_NAME: &str = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$";

/// Makes the bodies in `doc`'s components exact, as the module comment says.
pub(super) fn exact(doc: &mut OpenApi) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    components
        .schemas
        .insert("RetryPolicy".to_owned(), RefOr::T(retry_policy()));
    for (name, schema) in components.schemas.iter_mut() {
        let RefOr::T(Schema::Object(object)) = schema else {
            continue;
        };
        if let Some(RefOr::T(Schema::Object(env))) = object.properties.get_mut("env") {
            env_names(env);
        }
        if object.properties.contains_key("retry") {
            object.properties.insert(
                "retry".to_owned(),
                RefOr::T(nullable(RefOr::Ref(Ref::from_schema_name("RetryPolicy")))),
            );
        }
        if object.properties.contains_key("input_base64") {
            inputs(object);
        }
        if object.properties.contains_key("day_of_week") {
            schedule_spec(object);
        }
        if name == "CancelFilter" {
            at_least_one_filter(object);
        }
        if name == "EndedDto" {
            report_unless_interrupted(object);
        }
        if name == "ReportDto" || name == "AttemptDto" {
            report(object);
        }
        if name == "LeaseRequest"
            && let Some(RefOr::T(Schema::Array(queues))) = object.properties.get_mut("queues")
        {
            queues.items = ArrayItems::RefOrSchema(Box::new(RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(NAME))
                    .max_length(Some(64))
                    .build(),
            ))));
        }
    }
}

fn env_names(env: &mut Object) {
    env.property_names = Some(Box::new(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(ENV_NAME))
            .build(),
    )));
    env.max_properties = Some(MAX_ENV);
}

/// `input_base64` is base64, and at most one of `input`, `input_text` and `input_base64`
/// is given (not null).
fn inputs(body: &mut Object) {
    if let Some(RefOr::T(Schema::Object(b64))) = body.properties.get_mut("input_base64") {
        b64.pattern = Some(BASE64.to_owned());
    }
    // When one is given (not null), the other two are absent or null. Said with
    // `dependentSchemas` rather than an `anyOf` beside the properties, which generated
    // clients read as a union of shapes instead of one object.
    let inputs = ["input", "input_text", "input_base64"];
    let mut dependent = serde_json::Map::new();
    for given in inputs {
        let others: serde_json::Map<String, Value> = inputs
            .iter()
            .filter(|i| **i != given)
            .map(|i| ((*i).to_owned(), json!({"type": "null"})))
            .collect();
        dependent.insert(
            given.to_owned(),
            json!({"anyOf": [
                {"properties": {given: {"type": "null"}}},
                {"properties": others},
            ]}),
        );
    }
    keyword(body, "dependentSchemas", Value::Object(dependent));
}

/// A schedule's time zone has a zone name's shape; field-set values are in their ranges.
fn schedule_spec(body: &mut Object) {
    // The shape of an IANA zone name (`UTC`, `Europe/Paris`, `Etc/GMT+5`): not the list
    // of every zone, whose names generated clients cannot all make enum members of.
    if let Some(RefOr::T(Schema::Object(tz))) = body.properties.get_mut("tz") {
        tz.pattern = Some(TZ_NAME.to_owned());
        tz.max_length = Some(64);
    }
    for (field, min, max) in [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day_of_month", 1, 31),
        ("month", 1, 12),
        ("day_of_week", 0, 6),
    ] {
        if let Some(RefOr::T(Schema::Array(set))) = body.properties.get_mut(field) {
            set.items = ArrayItems::RefOrSchema(Box::new(RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(min))
                    .maximum(Some(max))
                    .build(),
            ))));
        }
    }
}

/// A cancel names at least one filter (a state, or a task, queue, context or unique key
/// that is not null), or says `all: true`.
fn at_least_one_filter(body: &mut Object) {
    let mut branches =
        vec![json!({"required": ["state"], "properties": {"state": {"minItems": 1}}})];
    for field in ["task", "queue", "context", "unique_key"] {
        branches.push(json!({"required": [field], "properties": {field: {"type": "string"}}}));
    }
    branches.push(json!({"required": ["all"], "properties": {"all": {"const": true}}}));
    keyword(body, "anyOf", Value::Array(branches));
}

/// An ended attempt carries its report unless it says `interrupted: true`.
fn report_unless_interrupted(body: &mut Object) {
    keyword(
        body,
        "if",
        json!({"required": ["interrupted"], "properties": {"interrupted": {"const": true}}}),
    );
    keyword(
        body,
        "else",
        json!({"required": ["report"],
               "properties": {"report": {"$ref": "#/components/schemas/ReportDto"}}}),
    );
}

/// An attempt (as a worker reports it, and as a job's history shows it) names a reason and a
/// trap kind the server knows; a report's times are RFC 3339 and its output and log base64.
fn report(body: &mut Object) {
    let words = |all: Vec<Value>| ObjectBuilder::new().enum_values(Some(all)).build();
    let reasons = Reason::ALL.iter().map(|r| json!(r.as_str())).collect();
    body.properties.insert(
        "reason".to_owned(),
        RefOr::T(Schema::Object(words(reasons))),
    );
    let mut kinds: Vec<Value> = TrapKind::ALL.iter().map(|k| json!(k.as_str())).collect();
    kinds.push(Value::Null);
    body.properties.insert(
        "trap_kind".to_owned(),
        RefOr::T(Schema::Object(words(kinds))),
    );
    for field in ["started_at", "finished_at"] {
        if let Some(RefOr::T(Schema::Object(t))) = body.properties.get_mut(field) {
            t.format = Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
                utoipa::openapi::schema::KnownFormat::DateTime,
            ));
        }
    }
    for field in ["output_base64", "stderr_base64"] {
        if let Some(RefOr::T(Schema::Object(b))) = body.properties.get_mut(field) {
            b.pattern = Some(BASE64.to_owned());
        }
    }
}

/// Adds a JSON Schema keyword utoipa's `Object` has no field for; its extensions map is
/// written flat into the object, so the keyword goes there.
fn keyword(object: &mut Object, name: &str, value: Value) {
    object
        .extensions
        .get_or_insert_with(Default::default)
        .insert(name.to_owned(), value);
}

/// `schema` or null.
fn nullable(schema: RefOr<Schema>) -> Schema {
    Schema::OneOf(
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(schema)
            .item(Schema::Object(
                ObjectBuilder::new().schema_type(Type::Null).build(),
            ))
            .build(),
    )
}

/// The retry policy's fields, each optional (a default fills it), with the bounds
/// `RetryPolicy::validate` checks.
fn retry_policy() -> Schema {
    let number = |min: f64, max: Option<f64>, about: &str| {
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(min))
                .maximum(max)
                .description(Some(about))
                .build(),
        ))
    };
    let reasons: Vec<Value> = Reason::ALL
        .iter()
        .map(|r| serde_json::to_value(r).expect("a reason is a string"))
        .collect();
    let reason = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(reasons))
        .build();
    let mut policy = ObjectBuilder::new()
        .description(Some(
            "How a job is retried; each field absent takes its default.",
        ))
        .property(
            "retries",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(1000))
                .description(Some("Extra attempts after the first (default 3).")),
        )
        .property(
            "backoff_seconds",
            number(0.0, None, "Delay before the first retry, in seconds."),
        )
        .property(
            "backoff_factor",
            number(
                1.0,
                None,
                "Each further retry waits this many times longer.",
            ),
        )
        .property(
            "backoff_max_seconds",
            number(0.0, None, "No retry waits longer than this, in seconds."),
        )
        .property(
            "jitter",
            number(
                0.0,
                Some(1.0),
                "Up to this fraction of the delay is added at random.",
            ),
        )
        .property("retry_on", Array::new(RefOr::T(Schema::Object(reason))))
        .property(
            "escalate",
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .description(Some(
                    "Double the budget a deadline, out_of_fuel or cpu_limit ran out of.",
                )),
        )
        .build();
    policy.schema_type = Type::Object.into();
    policy.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
    Schema::Object(policy)
}
