//! The HTTP API: every error status and role boundary through `oneshot`, and the main flows
//! over real HTTP on 127.0.0.1 (upload -> submit -> wait -> output, unique keys, cancelling a
//! running job, server-sent events in order).

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use remotask::domain::Role;
use remotask::http::{AppState, HttpCaps, router};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{Engine, guest_bytes, wat};

/// Small caps, so every cap can be crossed cheaply.
const CAPS: HttpCaps = HttpCaps {
    module_bytes: 1 << 20,
    input_bytes: 1024,
    batch_jobs: 5,
    body_bytes: 256 << 10,
};

/// An engine with the HTTP router in front and one token per role.
struct Api {
    engine: Engine,
    router: Router,
    admin: String,
    submit: String,
    worker: String,
    read: String,
}

impl Api {
    async fn new() -> Self {
        let engine = Engine::new().await;
        let router = router(AppState::new(engine.service.clone(), CAPS));
        let mut tokens = Vec::new();
        for role in Role::ALL {
            let t = engine.service.create_token(role, "test").await.unwrap();
            tokens.push(t.secret);
        }
        let [admin, submit, worker, read] = <[String; 4]>::try_from(tokens).unwrap();
        Self {
            engine,
            router,
            admin,
            submit,
            worker,
            read,
        }
    }

    fn token(&self, role: Role) -> &str {
        match role {
            Role::Admin => &self.admin,
            Role::Submit => &self.submit,
            Role::Worker => &self.worker,
            Role::Read => &self.read,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, Vec<u8>) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        if response
            .headers()
            .get("content-type")
            .is_some_and(|t| t == "text/event-stream")
        {
            // An event stream does not end; its status is the answer.
            return (status, Vec::new());
        }
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, bytes.to_vec())
    }

    /// Calls with an empty body.
    async fn empty(&self, method: Method, path: &str, token: &str) -> (StatusCode, Vec<u8>) {
        self.call(method, path, Some(token), Body::empty()).await
    }

    /// Calls with the admin token and parses the JSON answer.
    async fn admin_json(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let (status, bytes) = self.call(method, path, Some(&self.admin), body).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// Asserts the one error shape: the status, the code, and words in the message.
fn assert_error(status: StatusCode, body: &[u8], want: StatusCode, code: &str, words: &[&str]) {
    let text = String::from_utf8_lossy(body);
    assert_eq!(status, want, "{text}");
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(v["error"]["code"], code, "{text}");
    let message = v["error"]["message"].as_str().unwrap();
    for w in words {
        assert!(message.contains(w), "{message:?} lacks {w:?}");
    }
}

/// The Python tools `scripts/setup` installs, in their virtual environment.
pub(crate) fn venv_tool(name: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("REMOTASK_VENV").map_or_else(
        || std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/remotask-venv"),
        std::path::PathBuf::from,
    );
    let tool = venv.join("bin").join(name);
    assert!(
        tool.exists(),
        "{} is missing: run scripts/setup",
        tool.display()
    );
    tool
}

#[test]
fn the_openapi_document_is_valid_openapi_and_says_how_tokens_are_refused() {
    let doc = serde_json::to_value(remotask::http::openapi()).unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = std::process::Command::new(venv_tool("openapi-spec-validator"))
        .arg(file.path())
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses
                    .values()
                    .all(|r| r["description"].as_str().is_some_and(|d| !d.is_empty())),
                "{method} {path}: a response without a description"
            );
            let public = path == "/healthz" || path == "/v1/openapi.json";
            if !public {
                for status in ["401", "403"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_fuzzer_found_is_answered_with_the_one_error_shape_or_taken() {
    let api = Api::new().await;
    // A clean older than any duration can hold is older than every job: none, not a panic.
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/jobs/clean",
            Some(&api.admin),
            br#"{"older_than_seconds": 1.3963474200220405e+308}"#.to_vec(),
        )
        .await;
    assert_eq!(
        (s, String::from_utf8_lossy(&b).as_ref()),
        (StatusCode::OK, r#"{"count":0}"#)
    );
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/jobs/clean",
            Some(&api.admin),
            b"[null]".to_vec(),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        &["JSON object"],
    );
    // Empty filters and an empty defaults parameter are no filter and no defaults.
    let (s, _) = api
        .admin_json(
            Method::GET,
            "/v1/jobs?state=&task=&queue=&context=&after=",
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = api
        .call(
            Method::PUT,
            "/v1/tasks/plain?defaults=",
            Some(&api.admin),
            guest_bytes("echo"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    // A whole number is an integer however it is written; a time may have any offset.
    let (s, b) = api
        .admin_json(
            Method::POST,
            "/v1/jobs",
            json!({"task": "plain", "priority": 3.0, "limits": {"fuel": 1e6},
                "retry": {"retries": 2.0}, "run_at": "2000-01-01T01:30:00+01:30"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["priority"], 3, "{b}");
    assert_eq!(b["limits"]["fuel"], 1_000_000, "{b}");
    assert_eq!(b["run_at"], "2000-01-01T00:00:00.000Z", "{b}");
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(&api.admin),
            br#"{"task": "plain", "priority": 3.5}"#.to_vec(),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        &["priority"],
    );
    // A cancel's states are each a state a live job can be in: not empty, not ended.
    for state in ["", "completed"] {
        let body = json!({"state": [state], "queue": "default"}).to_string();
        let (s, b) = api
            .call(Method::POST, "/v1/jobs/cancel", Some(&api.admin), body)
            .await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_filter", &[]);
    }
    // A schedule's name in an update's body that is not the path's is refused as invalid.
    let (s, b) = api
        .call(
            Method::PUT,
            "/v1/schedules/nightly",
            Some(&api.admin),
            br#"{"name": "other", "task": "plain", "cron": "0 3 * * *"}"#.to_vec(),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        &["must match"],
    );
    // A task's default environment has variable names, as a job's does.
    let (s, b) = api
        .call(
            Method::PATCH,
            "/v1/tasks/plain",
            Some(&api.admin),
            br#"{"env": {"": "x"}}"#.to_vec(),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        &["variable name"],
    );
}

#[test]
fn a_client_generated_from_the_document_uploads_submits_and_reads_the_output() {
    let data = tempfile::tempdir().unwrap();
    let compiled = crate::remote::shared_cache().join("compiled");
    std::os::unix::fs::symlink(compiled, data.path().join("cache")).unwrap();
    let (child, url) = crate::serve::serve_http(data.path(), &["--workers", "1"]);
    let _server = crate::serve::Reap(child);
    let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let generated = tempfile::tempdir().unwrap();
    // The document the server serves at /v1/openapi.json.
    let doc = generated.path().join("openapi.json");
    std::fs::write(&doc, remotask::http::openapi().to_pretty_json().unwrap()).unwrap();
    let made = std::process::Command::new(venv_tool("openapi-python-client"))
        .args(["generate", "--meta", "none", "--path"])
        .arg(&doc)
        .arg("--output-path")
        .arg(generated.path().join("remotask_client"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let script = crate::support::workspace().join("tests/all/fixtures/client_check.py");
    let ran = std::process::Command::new(venv_tool("python"))
        .arg(script)
        .arg(generated.path())
        .args([&url, admin.trim()])
        .arg(crate::support::guest("echo"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "{said}");
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        r#"{"from": "a generated client"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_in_the_openapi_document_and_answers() {
    let api = Api::new().await;
    let (status, doc) = api
        .call(Method::GET, "/v1/openapi.json", None, Body::empty())
        .await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    let routes = [
        "GET /healthz",
        "GET /metrics",
        "GET /v1/openapi.json",
        "GET /v1/tasks",
        "PUT /v1/tasks/{name}",
        "GET /v1/tasks/{name}",
        "PATCH /v1/tasks/{name}",
        "DELETE /v1/tasks/{name}",
        "GET /v1/tasks/{name}/versions/{digest}",
        "GET /v1/modules/{digest}",
        "POST /v1/jobs",
        "GET /v1/jobs",
        "POST /v1/jobs/batch",
        "POST /v1/jobs/cancel",
        "POST /v1/jobs/clean",
        "GET /v1/jobs/{id}",
        "DELETE /v1/jobs/{id}",
        "GET /v1/jobs/{id}/output",
        "GET /v1/jobs/{id}/log",
        "GET /v1/jobs/{id}/attempts/{n}/bundle",
        "GET /v1/jobs/{id}/explain",
        "POST /v1/jobs/{id}/cancel",
        "POST /v1/jobs/{id}/release",
        "POST /v1/jobs/{id}/retry",
        "GET /v1/contexts",
        "GET /v1/queues",
        "GET /v1/queues/{name}",
        "POST /v1/queues/{name}/pause",
        "POST /v1/queues/{name}/resume",
        "GET /v1/events",
        "POST /v1/schedules",
        "GET /v1/schedules",
        "GET /v1/schedules/{name}",
        "PUT /v1/schedules/{name}",
        "DELETE /v1/schedules/{name}",
        "POST /v1/schedules/{name}/pause",
        "POST /v1/schedules/{name}/resume",
        "GET /v1/schedules/{name}/next",
        "POST /v1/tokens",
        "GET /v1/tokens",
        "DELETE /v1/tokens/{id}",
        "POST /v1/leases",
        "POST /v1/leases/heartbeat",
        "POST /v1/leases/report",
        "GET /v1/leases/events",
        "GET /v1/workers",
    ];
    let mut expected: Vec<String> = routes.iter().map(|r| r.to_string()).collect();
    expected.sort();
    documented.sort();
    assert_eq!(documented, expected);
    // Every documented route is served: without a token it is refused (401), never unknown.
    for route in &expected {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{name}", "echo")
            .replace("{id}", "01M88Q29NG2JQ4V0G000000000")
            .replace("{digest}", &"0".repeat(64))
            .replace("{n}", "1");
        let (status, body) = api
            .call(method.parse().unwrap(), &path, None, Body::empty())
            .await;
        let public = ["/healthz", "/v1/openapi.json"].contains(&path.as_str());
        let want = if public {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(status, want, "{route}: {}", String::from_utf8_lossy(&body));
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_boundary_holds() {
    let api = Api::new().await;
    let digest = api
        .engine
        .service
        .task(&"echo".parse().unwrap())
        .await
        .unwrap()
        .digest
        .to_hex();
    let echo = guest_bytes("echo");
    // (method, path, body, the role it needs)
    let cases: Vec<(Method, String, Vec<u8>, Role)> = vec![
        (
            Method::PUT,
            "/v1/tasks/echo2".into(),
            echo.clone(),
            Role::Admin,
        ),
        (
            Method::PATCH,
            "/v1/tasks/echo".into(),
            b"{}".to_vec(),
            Role::Admin,
        ),
        (
            Method::GET,
            format!("/v1/modules/{digest}"),
            vec![],
            Role::Worker,
        ),
        (
            Method::POST,
            "/v1/jobs".into(),
            br#"{"task": "echo", "hold": true}"#.to_vec(),
            Role::Submit,
        ),
        (Method::GET, "/v1/jobs".into(), vec![], Role::Read),
        (Method::GET, "/v1/tasks".into(), vec![], Role::Read),
        (
            Method::GET,
            "/v1/events?job=01M88Q29NG2JQ4V0G000000000".into(),
            vec![],
            Role::Read,
        ),
        (
            Method::POST,
            "/v1/queues/default/pause".into(),
            vec![],
            Role::Admin,
        ),
        (Method::POST, "/v1/jobs/clean".into(), vec![], Role::Admin),
        (Method::GET, "/v1/tokens".into(), vec![], Role::Admin),
        (Method::GET, "/metrics".into(), vec![], Role::Read),
    ];
    for (method, path, body, needed) in &cases {
        for role in Role::ALL {
            let (status, answer) = api
                .call(method.clone(), path, Some(api.token(role)), body.clone())
                .await;
            if role.allows(*needed) {
                assert!(
                    status.is_success(),
                    "{role} {method} {path}: {status} {}",
                    String::from_utf8_lossy(&answer)
                );
            } else {
                assert_error(
                    status,
                    &answer,
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    &[&format!("needs the {needed} role")],
                );
            }
        }
        let (status, answer) = api.call(method.clone(), path, None, body.clone()).await;
        assert_error(
            status,
            &answer,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            &["Bearer"],
        );
    }
    // The event stream above stays open; the route answered 200 for readers, which is the point.
    let (status, answer) = api.empty(Method::GET, "/v1/jobs", "rt_not-a-token").await;
    assert_error(
        status,
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        &["unknown"],
    );

    // A revoked token is refused at once.
    let (_, t) = api
        .admin_json(
            Method::POST,
            "/v1/tokens",
            json!({"role": "read", "name": "gone"}),
        )
        .await;
    let (secret, id) = (t["token"].as_str().unwrap(), t["id"].as_str().unwrap());
    let (status, _) = api.empty(Method::GET, "/v1/jobs", secret).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .admin_json(Method::DELETE, &format!("/v1/tokens/{id}"), Value::Null)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, answer) = api.empty(Method::GET, "/v1/jobs", secret).await;
    assert_error(
        status,
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        &["revoked"],
    );
    let (_, listed) = api.admin_json(Method::GET, "/v1/tokens", Value::Null).await;
    let gone = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap();
    assert!(gone["revoked_at"].is_string() && gone.get("token").is_none());

    // The last live admin token is not revoked, and keeps working.
    let admin_id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "admin" && t["revoked_at"].is_null())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, answer) = api
        .admin_json(
            Method::DELETE,
            &format!("/v1/tokens/{admin_id}"),
            Value::Null,
        )
        .await;
    assert_error(
        status,
        &serde_json::to_vec(&answer).unwrap(),
        StatusCode::CONFLICT,
        "conflict",
        &["last live admin token"],
    );
    let (status, _) = api.admin_json(Method::GET, "/v1/tokens", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_status_and_one_shape() {
    let api = Api::new().await;
    let submit = |body: &str| {
        let body = body.to_owned();
        let api = &api;
        async move {
            api.call(Method::POST, "/v1/jobs", Some(&api.submit), body)
                .await
        }
    };
    // 400: malformed JSON, naming the field.
    let (s, b) = submit(r#"{"task": 5}"#).await;
    assert_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        &["`task`", "invalid type"],
    );
    let (s, b) = submit(r#"{"task": "echo", "limits": {"fuel": "lots"}}"#).await;
    assert_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        &["`limits.fuel`"],
    );
    let (s, b) = submit(r#"{"task": "echo", "priorty": 1}"#).await;
    assert_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        &["unknown field `priorty`"],
    );
    let (s, b) = submit("not json").await;
    assert_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        &["expected"],
    );
    let (s, b) = submit(r#"{"task": "echo", "input": 1, "input_text": "x"}"#).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_input", &["one of"]);
    let (s, b) = api
        .empty(Method::GET, "/v1/jobs/not-an-id", &api.read)
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_id", &[]);
    let (s, b) = api
        .empty(Method::GET, "/v1/jobs?limit=many", &api.read)
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_query", &["limit"]);
    let (s, b) = api
        .empty(Method::GET, "/v1/jobs?state=sleeping", &api.read)
        .await;
    assert_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "invalid_query",
        &["sleeping"],
    );

    // 404: unknown job, task, module, route.
    let (s, b) = api
        .empty(
            Method::GET,
            "/v1/jobs/01M88Q29NG2JQ4V0G000000000",
            &api.read,
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found", &["not found"]);
    let (s, b) = submit(r#"{"task": "nope"}"#).await;
    assert_error(
        s,
        &b,
        StatusCode::NOT_FOUND,
        "not_found",
        &["\"nope\" is not registered"],
    );
    let (s, b) = api
        .call(
            Method::GET,
            &format!("/v1/modules/{}", "0".repeat(64)),
            Some(&api.worker),
            Body::empty(),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found", &["module"]);
    let (s, b) = api.call(Method::GET, "/v2/jobs", None, Body::empty()).await;
    assert_error(
        s,
        &b,
        StatusCode::NOT_FOUND,
        "not_found",
        &["no such route"],
    );
    let (s, b) = api.empty(Method::PATCH, "/v1/jobs", &api.admin).await;
    assert_error(
        s,
        &b,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &[],
    );

    // 409: an action the job's state does not allow.
    let (s, b) = submit(r#"{"task": "echo"}"#).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let id = serde_json::from_slice::<Value>(&b).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = api
        .empty(Method::POST, &format!("/v1/jobs/{id}/release"), &api.submit)
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict", &["not held"]);
    let (s, b) = api
        .empty(Method::GET, &format!("/v1/jobs/{id}/output"), &api.read)
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "no_output", &["queued"]);
    let (s, _) = api
        .empty(Method::POST, &format!("/v1/jobs/{id}/cancel"), &api.submit)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = api
        .empty(Method::POST, &format!("/v1/jobs/{id}/cancel"), &api.submit)
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "already_ended", &["cancelled"]);

    // 413: every size cap.
    let big_module = vec![0u8; CAPS.module_bytes + 1];
    let (s, b) = api
        .call(Method::PUT, "/v1/tasks/big", Some(&api.admin), big_module)
        .await;
    assert_error(
        s,
        &b,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &["module", "1048576"],
    );
    let input = json!({"task": "echo", "input_text": "x".repeat(CAPS.input_bytes + 1)});
    let (s, b) = submit(&input.to_string()).await;
    assert_error(
        s,
        &b,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &["input", "1024"],
    );
    let batch = json!({"jobs": vec![json!({"task": "echo"}); CAPS.batch_jobs + 1]});
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/jobs/batch",
            Some(&api.submit),
            batch.to_string(),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &["at most 5 jobs, got 6"],
    );
    let huge = json!({"jobs": [{"task": "echo", "input_text": "x".repeat(CAPS.body_bytes)}]});
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/jobs/batch",
            Some(&api.submit),
            huge.to_string(),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &["request body"],
    );
    let (s, b) =
        submit(&json!({"task": "echo", "input_text": "x".repeat(64 << 10)}).to_string()).await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "too_large", &[]);

    // 422: a refused module names what was refused; input the service refuses.
    let (s, b) = api
        .call(
            Method::PUT,
            "/v1/tasks/bad",
            Some(&api.admin),
            wat("forbidden_imports"),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "module_refused",
        &["env.open_socket", "remotask.read_host_file"],
    );
    let (s, b) = api
        .call(
            Method::PUT,
            "/v1/tasks/bad",
            Some(&api.admin),
            wat("start_with_params"),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "module_refused",
        &["`_start`", "(i32) -> ()"],
    );
    let (s, b) = api
        .call(
            Method::PUT,
            "/v1/tasks/bad",
            Some(&api.admin),
            b"(module)".to_vec(),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "module_refused",
        &[],
    );
    let (s, b) = submit(r#"{"task": "echo", "limits": {"max_seconds": -1}}"#).await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        &["max_seconds"],
    );
    let (s, b) = submit(r#"{"task": "echo", "limits": {"max_seconds": 7200}}"#).await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "over_cap",
        &["over queue default's cap"],
    );
    // Task defaults over the caps of their queue are refused at upload and on PATCH: every
    // job submitted without limits of its own would be refused.
    let (s, b) = api
        .call(
            Method::PUT,
            "/v1/tasks/greedy?fuel=1000000000000000",
            Some(&api.admin),
            guest_bytes("echo"),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "over_cap",
        &[
            "default limits",
            "fuel 1000000000000000",
            "cap of 1000000000000",
        ],
    );
    let (s, b) = api
        .call(
            Method::PATCH,
            "/v1/tasks/echo",
            Some(&api.admin),
            serde_json::to_vec(&json!({"limits": {"max_seconds": 7200}})).unwrap(),
        )
        .await;
    assert_error(
        s,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "over_cap",
        &["max_seconds 7200"],
    );
    // Nothing refused was stored.
    let (_, list) = api.admin_json(Method::GET, "/v1/jobs", Value::Null).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    let (s, _) = api
        .admin_json(Method::GET, "/v1/tasks/bad", Value::Null)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_keep_versions_defaults_and_modules() {
    let api = Api::new().await;
    let wc = guest_bytes("word-count");
    let (s, b) = api
        .call(
            Method::PUT,
            "/v1/tasks/wc?max_seconds=2&retries=1&queue=text",
            Some(&api.admin),
            wc.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let up: Value = serde_json::from_slice(&b).unwrap();
    let first = up["task"]["digest"].as_str().unwrap().to_owned();
    assert_eq!(up["admission"]["digest"], first.as_str());
    assert_eq!(up["task"]["defaults"]["queue"], "text");
    assert_eq!(up["task"]["defaults"]["limits"]["max_seconds"], 2.0);
    assert_eq!(up["task"]["defaults"]["retry"]["retries"], 1);

    // A second version: the name points at it, the first stays addressable, defaults stay.
    let echo = guest_bytes("echo");
    let (s, b) = api
        .call(Method::PUT, "/v1/tasks/wc", Some(&api.admin), echo.clone())
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let second = serde_json::from_slice::<Value>(&b).unwrap()["task"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, t) = api
        .admin_json(Method::GET, "/v1/tasks/wc", Value::Null)
        .await;
    assert_eq!(t["digest"], second.as_str());
    assert_eq!(t["versions"].as_array().unwrap().len(), 2);
    assert_eq!(t["defaults"]["queue"], "text");
    let (s, v) = api
        .admin_json(
            Method::GET,
            &format!("/v1/tasks/wc/versions/{first}"),
            Value::Null,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["current"].clone(), v["version"]["size_bytes"].clone()),
        (json!(false), json!(wc.len()))
    );
    assert!(
        v["admission"]["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "_start")
    );
    let (s, module) = api
        .empty(Method::GET, &format!("/v1/modules/{first}"), &api.worker)
        .await;
    assert_eq!((s, module == wc), (StatusCode::OK, true));

    // PATCH replaces the defaults.
    let (s, t) = api
        .admin_json(
            Method::PATCH,
            "/v1/tasks/wc",
            json!({"env": {"MODE": "x"}, "limits": {"fuel": 1000}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t["defaults"]["env"]["MODE"], "x");
    assert_eq!(t["defaults"]["queue"], Value::Null);
    assert_eq!(t["defaults"]["limits"]["fuel"], 1000);

    // Deleting the name keeps the module for jobs already submitted.
    let (s, _) = api
        .admin_json(Method::DELETE, "/v1/tasks/wc", Value::Null)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api
        .admin_json(Method::GET, "/v1/tasks/wc", Value::Null)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, tasks) = api.admin_json(Method::GET, "/v1/tasks", Value::Null).await;
    let names: Vec<&str> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "hostile"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_listed_by_filter_and_managed_in_bulk() {
    let api = Api::new().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = json!({"task": "echo", "hold": true, "context": format!("doc-{}", i % 2)});
        let (s, j) = api.admin_json(Method::POST, "/v1/jobs", body).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        assert_eq!(j["state"], "held");
        ids.push(j["id"].as_str().unwrap().to_owned());
    }
    // Pages of two, oldest first, the cursor carries on.
    let mut seen = Vec::new();
    let mut path = "/v1/jobs?limit=2&state=held".to_owned();
    loop {
        let (_, page) = api.admin_json(Method::GET, &path, Value::Null).await;
        for j in page["jobs"].as_array().unwrap() {
            seen.push(j["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/jobs?limit=2&state=held&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    // The older service's status names filter as their states do.
    let (s, older) = api
        .admin_json(
            Method::GET,
            "/v1/jobs?state=held,error,processing",
            Value::Null,
        )
        .await;
    let (_, newer) = api
        .admin_json(
            Method::GET,
            "/v1/jobs?state=held,failed,running",
            Value::Null,
        )
        .await;
    assert_eq!(
        (s, older["jobs"].as_array().unwrap().len()),
        (StatusCode::OK, 5)
    );
    assert_eq!(older, newer);
    let (_, page) = api
        .admin_json(Method::GET, "/v1/jobs?context=doc-1", Value::Null)
        .await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);

    let (_, e) = api
        .admin_json(
            Method::GET,
            &format!("/v1/jobs/{}/explain", ids[0]),
            Value::Null,
        )
        .await;
    assert_eq!(e["causes"], json!(["held"]));

    // Cancel by filter needs a filter (or all: true).
    let (s, _) = api
        .admin_json(Method::POST, "/v1/jobs/cancel", json!({}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, n) = api
        .admin_json(Method::POST, "/v1/jobs/cancel", json!({"context": "doc-0"}))
        .await;
    assert_eq!((s, n["count"].clone()), (StatusCode::OK, json!(3)));
    let (_, j) = api
        .admin_json(
            Method::POST,
            &format!("/v1/jobs/{}/retry", ids[0]),
            Value::Null,
        )
        .await;
    assert_eq!(j["state"], "queued");
    let (_, j) = api
        .admin_json(
            Method::POST,
            &format!("/v1/jobs/{}/release", ids[1]),
            Value::Null,
        )
        .await;
    assert_eq!(j["state"], "queued");
    let (s, _) = api
        .admin_json(Method::DELETE, &format!("/v1/jobs/{}", ids[2]), Value::Null)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // Clean removes the two cancelled jobs left; live ones stay.
    let (_, n) = api
        .admin_json(Method::POST, "/v1/jobs/clean", Value::Null)
        .await;
    assert_eq!(n["count"], 1);
    let (_, page) = api.admin_json(Method::GET, "/v1/jobs", Value::Null).await;
    let states: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["queued", "queued", "held"]);

    // Queues: pause shows in the list and in explain.
    let (_, q) = api
        .admin_json(Method::POST, "/v1/queues/default/pause", Value::Null)
        .await;
    assert_eq!(
        (q["paused"].clone(), q["counts"]["queued"].clone()),
        (json!(true), json!(2))
    );
    let (_, e) = api
        .admin_json(
            Method::GET,
            &format!("/v1/jobs/{}/explain", ids[0]),
            Value::Null,
        )
        .await;
    assert!(
        e["causes"].as_array().unwrap().contains(&json!("paused")),
        "{e}"
    );
    let (_, q) = api
        .admin_json(Method::POST, "/v1/queues/default/resume", Value::Null)
        .await;
    assert_eq!(q["paused"], false);
    let (_, qs) = api.admin_json(Method::GET, "/v1/queues", Value::Null).await;
    assert_eq!(qs[0]["name"], "default");
}

/// `GET url` with `token` over real HTTP, parsed as JSON.
async fn get_json(http: &reqwest::Client, url: String, token: &str) -> Value {
    let response = http.get(url).bearer_auth(token).send().await.unwrap();
    response.json().await.unwrap()
}

/// `POST url` with a JSON body and `token` over real HTTP, the answer parsed as JSON.
async fn post_json(http: &reqwest::Client, url: String, token: &str, body: &Value) -> Value {
    let response = http
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

/// Serves the router on 127.0.0.1 (a free port); returns the base URL. Also makes ring the
/// process's rustls provider, which the tests' `reqwest::Client::new()` needs.
async fn listen(state: AppState) -> String {
    remotask::cli::install_default_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_real_http_upload_submit_wait_and_read_the_output() {
    let mut api = Api::new().await;
    api.engine.start_workers(2);
    let base = listen(AppState::new(api.engine.service.clone(), CAPS)).await;
    let http = reqwest::Client::new();
    let up = http
        .put(format!("{base}/v1/tasks/word-count"))
        .bearer_auth(&api.admin)
        .body(guest_bytes("word-count"))
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), 201);

    let submitted = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&api.submit)
        .json(&json!({"task": "word-count", "input": {"text": "to be or not to be"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 202);
    let job: Value = submitted.json().await.unwrap();
    let id = job["id"].as_str().unwrap();

    let done: Value = get_json(&http, format!("{base}/v1/jobs/{id}?wait=20"), &api.read).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["output_encoding"], "json");
    assert_eq!(done["output"]["words"], 6);
    let attempts = done["attempt_history"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["reason"], "completed");
    assert!(attempts[0]["receipt"]["fuel_consumed"].as_u64().unwrap() > 0);

    let raw = http
        .get(format!("{base}/v1/jobs/{id}/output"))
        .bearer_auth(&api.read)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let raw: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(raw, done["output"]);

    // A failing job: the error and the log of each attempt.
    let failed: Value = post_json(
        &http,
        format!("{base}/v1/jobs"),
        &api.submit,
        &json!({"task": "hostile", "args": ["panic", "boom"]}),
    )
    .await;
    let id = failed["id"].as_str().unwrap();
    let done: Value = get_json(&http, format!("{base}/v1/jobs/{id}?wait=20"), &api.read).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["error"]["reason"], "trap");
    let log = http
        .get(format!("{base}/v1/jobs/{id}/log"))
        .bearer_auth(&api.read)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.starts_with("== attempt 1: trap"), "{log}");
    assert!(log.contains("boom"), "{log}");

    // The batch route stores many at once, and the metrics count their attempts.
    let batch: Value = post_json(&http, format!("{base}/v1/jobs/batch"), &api.submit, &json!({"jobs": [{"task": "echo", "input_text": "a"}, {"task": "echo", "input_text": "b"}]})).await;
    for j in batch["jobs"].as_array().unwrap() {
        let id = j["id"].as_str().unwrap();
        let done: Value = get_json(&http, format!("{base}/v1/jobs/{id}?wait=20"), &api.read).await;
        assert_eq!(done["state"], "completed");
    }
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(&api.read)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("remotask_attempts_total{reason=\"completed\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("remotask_attempts_total{reason=\"trap\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("remotask_jobs{queue=\"default\",state=\"completed\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("remotask_attempt_duration_seconds_count 4"),
        "{metrics}"
    );
    api.engine.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_real_http_a_unique_key_returns_the_live_job() {
    let api = Api::new().await;
    let base = listen(AppState::new(api.engine.service.clone(), CAPS)).await;
    let http = reqwest::Client::new();
    let body = json!({"task": "echo", "unique_key": "report:42", "hold": true});
    let first = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&api.submit)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let second = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&api.submit)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["unique_key"], "report:42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_real_http_a_running_job_is_cancelled_within_milliseconds() {
    let mut api = Api::new().await;
    api.engine.start_workers(1);
    let base = listen(AppState::new(api.engine.service.clone(), CAPS)).await;
    let http = reqwest::Client::new();
    let job: Value = post_json(
        &http,
        format!("{base}/v1/jobs"),
        &api.submit,
        &json!({"task": "hostile", "args": ["loop"], "limits": {"max_seconds": 60}}),
    )
    .await;
    let id = job["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let j: Value = get_json(&http, format!("{base}/v1/jobs/{id}"), &api.read).await;
        if j["state"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "never ran: {j}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = Instant::now();
    let c: Value = http
        .post(format!("{base}/v1/jobs/{id}/cancel"))
        .bearer_auth(&api.submit)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["outcome"], "cancelling");
    let done: Value = get_json(&http, format!("{base}/v1/jobs/{id}?wait=10"), &api.read).await;
    let took = asked.elapsed();
    assert_eq!(done["state"], "cancelled", "{done}");
    assert_eq!(done["error"]["reason"], "cancelled");
    assert_eq!(done["attempt_history"][0]["reason"], "cancelled");
    assert!(took < Duration::from_millis(1000), "cancel took {took:?}");
    // The worker goes on with the next job.
    let next: Value = post_json(
        &http,
        format!("{base}/v1/jobs"),
        &api.submit,
        &json!({"task": "echo", "input_text": "after"}),
    )
    .await;
    let id = next["id"].as_str().unwrap();
    let done: Value = get_json(&http, format!("{base}/v1/jobs/{id}?wait=20"), &api.read).await;
    assert_eq!(done["state"], "completed");
    api.engine.stop_workers().await;
}

/// Reads server-sent events until `n` `job` events arrived; returns their states.
pub(crate) async fn read_events(response: &mut reqwest::Response, n: usize) -> Vec<String> {
    let mut buffer = String::new();
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while states.len() < n {
        let chunk = tokio::time::timeout_at(deadline.into(), response.chunk())
            .await
            .unwrap_or_else(|_| panic!("events in time; got {states:?}"))
            .unwrap()
            .expect("stream open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if !block.lines().any(|l| l == "event: job") {
                continue;
            }
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap();
            let event: Value = serde_json::from_str(data).unwrap();
            states.push(event["state"].as_str().unwrap().to_owned());
        }
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_deliver_a_jobs_transitions_in_order() {
    let mut api = Api::new().await;
    api.engine.start_workers(1);
    let base = listen(AppState::new(api.engine.service.clone(), CAPS)).await;
    let http = reqwest::Client::new();
    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&api.submit)
        .json(
            &json!({"task": "hostile", "args": ["exit", "75"], "hold": true,
            "retry": {"retries": 1, "backoff_seconds": 0, "jitter": 0}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    // Another job's events do not reach a stream filtered by job.
    let mut events = http
        .get(format!("{base}/v1/events?job={id}"))
        .bearer_auth(&api.read)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    http.post(format!("{base}/v1/jobs"))
        .bearer_auth(&api.submit)
        .json(&json!({"task": "echo"}))
        .send()
        .await
        .unwrap();
    http.post(format!("{base}/v1/jobs/{id}/release"))
        .bearer_auth(&api.submit)
        .send()
        .await
        .unwrap();
    // A retry waits in `scheduled`, is `queued` when due and then taken.
    let states = read_events(&mut events, 6).await;
    assert_eq!(
        states,
        [
            "queued",
            "running",
            "scheduled",
            "queued",
            "running",
            "failed"
        ]
    );
    api.engine.stop_workers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_over_the_api() {
    let api = Api::new().await;
    let body = json!({"name": "nightly", "task": "echo", "cron": "0 3 * * *",
        "tz": "Europe/Berlin", "input": {"report": true}, "catch_up": "all"});
    // Only admins manage schedules; readers read them.
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/schedules",
            Some(&api.submit),
            body.to_string(),
        )
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden", &["admin"]);
    let (s, created) = api
        .admin_json(Method::POST, "/v1/schedules", body.clone())
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["spec"],
        json!({"cron": "0 3 * * *", "tz": "Europe/Berlin"})
    );
    assert_eq!(
        (created["overlap"].clone(), created["catch_up"].clone()),
        (json!("skip"), json!("all"))
    );
    assert_eq!(created["input"], json!({"report": true}));
    assert!(
        created["next_fire"]
            .as_str()
            .unwrap()
            .ends_with(":00:00.000Z")
    );
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/schedules",
            Some(&api.admin),
            body.to_string(),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict", &["exists"]);

    let bad = |patch: Value| {
        let mut b = body.clone();
        b["name"] = json!("other");
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string()
    };
    for (patch, status, code, words) in [
        (
            json!({"cron": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "cron \"nope\"",
        ),
        (
            json!({"tz": "Nowhere/City"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "unknown time zone",
        ),
        (
            json!({"minute": [5]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "exactly one of",
        ),
        (
            json!({"overlap": "sometimes"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "skip, allow",
        ),
        (
            json!({"task": "nope"}),
            StatusCode::NOT_FOUND,
            "not_found",
            "not registered",
        ),
        (
            json!({"every": 5}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "unknown field `every`",
        ),
    ] {
        let (s, b) = api
            .call(Method::POST, "/v1/schedules", Some(&api.admin), bad(patch))
            .await;
        assert_error(s, &b, status, code, &[words]);
    }

    let (s, next) = api
        .empty(Method::GET, "/v1/schedules/nightly/next?n=3", &api.read)
        .await;
    assert_eq!(s, StatusCode::OK);
    let next: Value = serde_json::from_slice(&next).unwrap();
    assert_eq!(next["times"].as_array().unwrap().len(), 3);

    // Update in place: the seed's field sets, and the next fire moves.
    let update = json!({"task": "echo", "minute": [11, 13]});
    let (s, updated) = api
        .admin_json(Method::PUT, "/v1/schedules/nightly", update)
        .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["spec"], json!({"minute": [11, 13]}));
    assert_ne!(updated["next_fire"], created["next_fire"]);
    let (_, paused) = api
        .admin_json(Method::POST, "/v1/schedules/nightly/pause", Value::Null)
        .await;
    assert_eq!(paused["paused"], true);
    let (_, resumed) = api
        .admin_json(Method::POST, "/v1/schedules/nightly/resume", Value::Null)
        .await;
    assert_eq!(resumed["paused"], false);
    let (_, list) = api
        .admin_json(Method::GET, "/v1/schedules", Value::Null)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (s, _) = api
        .admin_json(Method::DELETE, "/v1/schedules/nightly", Value::Null)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = api
        .empty(Method::GET, "/v1/schedules/nightly", &api.read)
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found", &["nightly"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempts_bundle_is_served_to_readers_and_names_what_is_missing() {
    let mut api = Api::new().await;
    api.engine.start_workers(1);
    let job = api
        .engine
        .submit(Engine::request("hostile", &["random", "3"]))
        .await;
    let job = api.engine.wait(job.id).await;
    let path = format!("/v1/jobs/{}/attempts/1/bundle", job.id);
    for role in Role::ALL {
        let (status, body) = api.empty(Method::GET, &path, api.token(role)).await;
        assert_eq!(status, StatusCode::OK, "{role}");
        let bundle = remotask::domain::Bundle::decode(&body).unwrap();
        assert_eq!(bundle.header.job, job.id);
        assert_eq!(bundle.header.args, vec!["random", "3"]);
        assert_eq!(
            bundle.header.result.reason,
            remotask::domain::Reason::GuestError
        );
        assert_eq!(bundle.module, guest_bytes("hostile"));
    }
    let missing = format!("/v1/jobs/{}/attempts/2/bundle", job.id);
    let (status, answer) = api.empty(Method::GET, &missing, &api.read).await;
    assert_error(
        status,
        &answer,
        StatusCode::NOT_FOUND,
        "not_found",
        &[&format!("job {} has no attempt 2", job.id)],
    );
    for n in ["0", "x", "-1"] {
        let bad = format!("/v1/jobs/{}/attempts/{n}/bundle", job.id);
        let (status, answer) = api.empty(Method::GET, &bad, &api.read).await;
        assert_error(
            status,
            &answer,
            StatusCode::BAD_REQUEST,
            "invalid_attempt",
            &["an attempt is a number from 1"],
        );
    }
}
