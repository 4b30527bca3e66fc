//! The API contract from outside: schemathesis, with every check, against a real server
//! finds nothing the server and its OpenAPI document disagree on; and the README's table of
//! routes is exactly the document's paths and methods, and its table of trap kinds the
//! document's kinds.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Instant;

use crate::http::venv_tool;
use crate::serve::{Reap, serve_http};

/// Runs schemathesis against the document at `url` with `token`, with the exceptions in
/// `fixtures/schemathesis.toml`, the hooks in `fixtures/schemathesis_hooks.py`, and then
/// `filters`; panics with its report on any finding.
fn fuzz(url: &str, token: &str, filters: &[&str]) {
    let fixtures = crate::support::workspace().join("tests/all/fixtures");
    let config = fixtures.join("schemathesis.toml");
    let reports = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(venv_tool("schemathesis"))
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{url}/v1/openapi.json"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        // Every check; each phase (examples, coverage, fuzzing, stateful) that applies.
        .args(["--checks", "all"])
        // Bounded and reproducible: few examples an operation, a fixed seed, no database of
        // earlier runs, one worker.
        .args(["--max-examples", "20", "--seed", "1", "--workers", "1"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--request-timeout", "10"])
        .args(filters)
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", &fixtures)
        .current_dir(reports.path())
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis {filters:?} found:\n{report}"
    );
    eprintln!(
        "schemathesis {filters:?}: nothing found in {:.0?}",
        started.elapsed()
    );
}

#[test]
fn the_api_fuzzer_finds_nothing_with_every_check_against_a_real_server() {
    let data = tempfile::tempdir().unwrap();
    let (child, url) = serve_http(data.path(), &["--workers", "1"]);
    let _server = Reap(child);
    let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let (url, admin) = (url.as_str(), admin.trim());
    // Every route an admin may call, but revoking a token (last, below: it would revoke the
    // token the run uses) and the lease routes, which a worker token calls (next).
    fuzz(
        url,
        admin,
        &[
            "--exclude-path-regex",
            "^/v1/leases",
            "--exclude-operation-id",
            "revoke_token",
        ],
    );
    // A remote worker's routes with a worker token: leases (each wait cut short by the
    // hooks), heartbeats, reports of ended attempts, the stream of pushed cancels.
    let worker = worker_token(url, admin);
    fuzz(url, &worker, &["--include-path-regex", "^/v1/leases"]);
    // The token routes, revoking included, last.
    fuzz(url, admin, &["--include-path-regex", "^/v1/tokens"]);
}

/// A new token with the `worker` role, made through the API.
fn worker_token(url: &str, admin: &str) -> String {
    let out = crate::support::remotask()
        .args([
            "token",
            "create",
            "--role",
            "worker",
            "--name",
            "fuzzed-worker",
        ])
        .args(["--server", url, "--token", admin])
        .env_remove("REMOTASK_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_owned()
}

/// The routes of the README's table: one row a path, its methods in the first column.
fn readme_routes() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(crate::support::workspace().join("README.md")).unwrap();
    let table = readme
        .split("| method | path | role | notes |")
        .nth(1)
        .expect("the README has the table of routes");
    let mut routes = BTreeSet::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let path = cells[2].trim_matches('`');
        for method in cells[1].split(", ") {
            let fresh = routes.insert(format!("{} {path}", method.trim_matches('`')));
            assert!(fresh, "the README lists {method} {path} twice");
        }
    }
    routes
}

#[test]
fn the_readme_lists_exactly_the_routes_of_the_openapi_document() {
    let doc = serde_json::to_value(remotask::http::openapi()).unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let readme = readme_routes();
    let missing: Vec<_> = documented.difference(&readme).collect();
    let extra: Vec<_> = readme.difference(&documented).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README lacks {missing:?}; README has, the document does not, {extra:?}"
    );
}

/// The README's table of trap kinds names exactly the kinds the document gives an attempt.
#[test]
fn the_readme_lists_exactly_the_trap_kinds_of_the_openapi_document() {
    let doc = serde_json::to_value(remotask::http::openapi()).unwrap();
    let attempt = &doc["components"]["schemas"]["AttemptDto"]["properties"]["trap_kind"];
    let documented: BTreeSet<String> = attempt["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("trap_kind has no enum: {attempt}"))
        .iter()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    let readme = std::fs::read_to_string(crate::support::workspace().join("README.md")).unwrap();
    let table = readme
        .split("| trap_kind | what the guest did |")
        .nth(1)
        .expect("the README has the table of trap kinds");
    let listed: BTreeSet<String> = table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            row.split('|')
                .nth(1)
                .unwrap()
                .trim()
                .trim_matches('`')
                .to_owned()
        })
        .collect();
    assert_eq!(listed, documented);
    assert_eq!(documented.len(), remotask::domain::TrapKind::ALL.len());
}
