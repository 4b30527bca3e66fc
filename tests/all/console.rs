//! The web console in a real browser (headless Chromium over WebDriver) against a real
//! `remotask serve`: signing in and out, what each role is offered and what the server
//! refuses whatever a page showed, a job's page and its actions with their messages, queues
//! paused from the console, labelled fields, every control reached by keyboard, readable
//! contrast, and a phone-sized window.

use std::time::Duration;

use serde_json::json;

use crate::browser::Browser;
use crate::remote::{Api, guest_dir};
use crate::serve::{Reap, cli, serve_http};

const FORM: &str = "application/x-www-form-urlencoded";

/// A server with the echo and hostile guests registered and no guest threads (so jobs stay
/// where they are put), its admin API, and tokens of the other roles.
struct Console {
    data: tempfile::TempDir,
    _modules: tempfile::TempDir,
    _server: Reap,
    url: String,
    api: Api,
}

impl Console {
    fn start() -> Self {
        Self::with_workers("0")
    }

    fn with_workers(workers: &str) -> Self {
        let data = tempfile::tempdir().unwrap();
        let modules = guest_dir();
        let (child, url) = serve_http(
            data.path(),
            &[
                "--workers",
                workers,
                "--register-dir",
                modules.path().to_str().unwrap(),
            ],
        );
        let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
        Self {
            api: Api::new(url.clone(), admin.trim().to_owned()),
            _server: Reap(child),
            _modules: modules,
            data,
            url,
        }
    }

    fn token(&self, role: &str) -> String {
        let (code, out, err) = cli(
            &self.url,
            self.data.path(),
            &["token", "create", "--role", role, "--name", role],
        );
        assert_eq!(code, 0, "{err}");
        out.lines().next().unwrap().trim().to_owned()
    }

    /// Signs `browser` in with `token` from a page that needs a session; lands on `path`.
    async fn sign_in(&self, browser: &Browser, token: &str, path: &str) {
        browser.open(&format!("{}{path}", self.url)).await;
        assert!(
            browser.url().await.contains("/ui/login?next="),
            "{} sends to sign-in",
            path
        );
        browser.type_into("#token", token).await;
        browser.click("form.login button[type=submit]").await;
        browser.wait_for(path).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_shows_jobs_and_acts_within_the_role() {
    let console = Console::start();
    let held = console
        .api
        .submit(vec![
            json!({"task": "echo", "input": {"n": 1}, "hold": true, "context": "order-7"}),
        ])
        .await
        .remove(0);
    let browser = Browser::start().await;

    // `/` goes to the console, which asks to sign in; a wrong token is refused there.
    browser.open(&format!("{}/", console.url)).await;
    assert!(browser.url().await.contains("/ui/login"));
    browser.type_into("#token", "rt_not-a-token").await;
    browser.click("form.login button[type=submit]").await;
    assert!(
        browser.text(".error").await.contains("Unknown or revoked"),
        "{}",
        browser.url().await
    );

    // A submit token: the job's page shows the job and offers the moves its state allows.
    let submit = console.token("submit");
    let page = format!("/ui/jobs/{held}");
    console.sign_in(&browser, &submit, &page).await;
    assert_eq!(browser.text("h1").await, format!("Job {held}"));
    let shown = browser.text("main").await;
    for words in ["held", "order-7", "\"n\": 1"] {
        assert!(shown.contains(words), "{words:?} in {shown}");
    }
    let buttons = browser.all(".actions button").await.len();
    assert_eq!(buttons, 3, "cancel, release and delete for a held job");
    browser
        .click(&format!("form[action='/ui/jobs/{held}/release'] button"))
        .await;
    wait_for_text(&browser, ".note", "Released.").await;
    let job = console.api.job(&held).await;
    assert_eq!(job["state"], "queued", "{job}");

    // The job table finds it, by state and by id.
    browser
        .open(&format!("{}/ui/jobs?state=queued", console.url))
        .await;
    let rows = browser.all("tbody tr").await.len();
    assert_eq!(rows, 1);
    browser
        .type_into("form.filters input[name=id]", &held)
        .await;
    browser.click("form.filters:nth-of-type(2) button").await;
    browser.wait_for(&page).await;

    // A submit token cannot pause a queue: the page offers nothing, the server refuses.
    browser.open(&format!("{}/ui/queues", console.url)).await;
    assert!(browser.all("form[action$='/pause']").await.is_empty());
    browser.click("form.signout button").await;
    browser.wait_for("/ui/login").await;
    browser.open(&format!("{}{page}", console.url)).await;
    assert!(browser.url().await.contains("/ui/login"), "signed out");

    // A read token sees the job and is offered no action.
    let read = console.token("read");
    console.sign_in(&browser, &read, &page).await;
    assert!(browser.all(".actions button").await.is_empty());

    // The admin pauses the default queue from the console, and is told so.
    browser.click("form.signout button").await;
    browser.wait_for("/ui/login").await;
    console
        .sign_in(&browser, &console.api.admin, "/ui/queues")
        .await;
    browser
        .click("form[action='/ui/queues/default/pause'] button")
        .await;
    wait_for_text(&browser, ".note", "Queue default paused.").await;
    let queue = console.api.get("/v1/queues/default").await;
    assert_eq!(queue["paused"], true, "{queue}");

    // Every field has a label; nothing is wider than a 375 px phone but the tables, which
    // scroll in their own box.
    let pages = [
        "/ui",
        "/ui/jobs",
        &page,
        "/ui/queues",
        "/ui/tasks",
        "/ui/schedules",
        "/ui/workers",
    ];
    for path in pages {
        browser.open(&format!("{}{path}", console.url)).await;
        let unlabelled = browser
            .run(
                "return [...document.querySelectorAll('input:not([type=hidden]), select')]\
                 .filter(e => !e.labels || e.labels.length === 0).length;",
            )
            .await;
        assert_eq!(unlabelled, json!(0), "{path}");
    }
    browser.resize(375, 800).await;
    for path in pages {
        browser.open(&format!("{}{path}", console.url)).await;
        let wide = browser
            .run("return document.documentElement.scrollWidth;")
            .await;
        let inner = browser.run("return window.innerWidth;").await;
        assert!(
            wide.as_u64().unwrap() <= inner.as_u64().unwrap(),
            "{path} is {wide} px wide in a {inner} px window"
        );
    }
    browser.quit().await;
}

/// What the server refuses whatever a page showed: an action without the session's CSRF
/// token, an action the role does not allow, and a page without a session. The cookie is
/// `HttpOnly` and `SameSite=Strict` (and not `Secure` over plain HTTP).
/// The job table keeps a stream of job events open while it is seen; a page left behind or
/// in a tab behind others must let it go, or after six such pages (a browser's connections to
/// one server over HTTP/1.1) the next request waits for a connection until a stream times
/// out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_left_behind_let_their_event_streams_go() {
    let console = Console::start();
    let browser = Browser::start().await;
    console
        .sign_in(&browser, &console.api.admin, "/ui/jobs")
        .await;
    for visit in 0..10 {
        let path = format!("/ui/jobs?state=queued&visit={visit}");
        browser.open(&format!("{}{path}", console.url)).await;
        browser.wait_for(&path).await;
        // How long the request waited before it was sent: milliseconds, not the minute it
        // took when every earlier page still held its stream.
        let waited = browser
            .run(
                "const n = performance.getEntriesByType('navigation')[0]; \
                 return n.requestStart - n.startTime;",
            )
            .await;
        assert!(
            waited.as_f64().unwrap() < 5_000.0,
            "visit {visit} waited {waited} ms for a connection"
        );
    }

    // A page not seen (another tab in front) holds no stream either; seen again, it shows
    // what moved meanwhile.
    let id = console
        .api
        .submit(vec![json!({"task": "echo", "hold": true})])
        .await
        .remove(0);
    browser.open(&format!("{}/ui/jobs", console.url)).await;
    let cell = format!("#job-{id} td[data-state]");
    wait_for_text(&browser, &cell, "held").await;
    let seen = |seen: bool| {
        format!(
            "Object.defineProperty(document, 'hidden', {{ value: {}, configurable: true }}); \
             document.dispatchEvent(new Event('visibilitychange')); return null;",
            !seen
        )
    };
    browser.run(&seen(false)).await;
    let r = console
        .api
        .request(reqwest::Method::POST, &format!("/v1/jobs/{id}/release"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        browser.text(&cell).await,
        "held",
        "no stream while not seen"
    );
    browser.run(&seen(true)).await;
    wait_for_text(&browser, &cell, "queued").await;
    browser.quit().await;
}

/// Every control of every page is reached with the Tab key alone, the skip link first, and
/// shows where the focus is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_control_is_reached_by_keyboard() {
    let console = Console::start();
    let id = console
        .api
        .submit(vec![json!({"task": "echo", "hold": true})])
        .await
        .remove(0);
    let browser = Browser::start().await;
    console.sign_in(&browser, &console.api.admin, "/ui").await;
    let pages = [
        "/ui".to_owned(),
        "/ui/jobs".to_owned(),
        format!("/ui/jobs/{id}"),
        "/ui/queues".to_owned(),
        "/ui/tasks".to_owned(),
        "/ui/schedules".to_owned(),
        "/ui/tokens".to_owned(),
        "/ui/workers".to_owned(),
    ];
    for path in &pages {
        browser.open(&format!("{}{path}", console.url)).await;
        // Each control numbered; then Tab from the top of the page until focus leaves it.
        let controls = browser
            .run(
                "const all = [...document.querySelectorAll('a[href], button, \
                 input:not([type=hidden]), select, textarea')]; \
                 all.forEach((e, i) => e.dataset.k = i); \
                 document.activeElement.blur(); return all.length;",
            )
            .await
            .as_u64()
            .unwrap();
        let mut reached = std::collections::BTreeSet::new();
        let mut first = None;
        for _ in 0..controls + 5 {
            browser.press_tab().await;
            let focused = browser
                .run(
                    "const e = document.activeElement; \
                     return e && e.dataset.k !== undefined ? \
                     [Number(e.dataset.k), e.className, getComputedStyle(e).outlineStyle] : null;",
                )
                .await;
            let Some(focused) = focused.as_array() else {
                continue;
            };
            first.get_or_insert_with(|| focused[1].clone());
            assert_ne!(
                focused[2], "none",
                "{path}: control {focused:?} shows no focus"
            );
            reached.insert(focused[0].as_u64().unwrap());
        }
        assert_eq!(
            first,
            Some(json!("skip")),
            "{path}: the skip link comes first"
        );
        let missed: Vec<u64> = (0..controls).filter(|k| !reached.contains(k)).collect();
        assert!(
            missed.is_empty(),
            "{path}: controls {missed:?} of {controls} not reached"
        );
    }
    browser.quit().await;
}

/// An HTTP client that shows redirects instead of following them.
pub(crate) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in to the console at `url` with `token` over plain HTTP; the session's cookie
/// (`name=value`), after checking its attributes.
pub(crate) async fn sign_in_over_http(url: &str, token: String) -> String {
    let r = no_redirects()
        .post(format!("{url}/ui/login"))
        .header("content-type", FORM)
        .body(serde_urlencoded::to_string([("token", token.as_str()), ("next", "/ui")]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "signed in");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "{cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

/// The CSRF token of the first form on a console page.
pub(crate) fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    page[start..start + 64].to_owned()
}

/// Posts a console form that carries only `csrf`, with the session `cookie`.
pub(crate) async fn post_form(
    http: &reqwest::Client,
    url: &str,
    cookie: &str,
    path: &str,
    csrf: &str,
) -> reqwest::Response {
    http.post(format!("{url}{path}"))
        .header("cookie", cookie)
        .header("content-type", FORM)
        .body(serde_urlencoded::to_string([("csrf", csrf)]).unwrap())
        .send()
        .await
        .unwrap()
}

/// Whether the console at `url` lets the session `cookie` see its dashboard; its page if so.
pub(crate) async fn signed_in_page(url: &str, cookie: &str) -> Option<String> {
    let r = no_redirects()
        .get(format!("{url}/ui"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    match r.status().as_u16() {
        200 => Some(r.text().await.unwrap()),
        303 => None,
        other => panic!("the dashboard answered {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_forged_forms_and_roles_that_do_not_allow_an_action() {
    let console = Console::start();
    let id = console
        .api
        .submit(vec![json!({"task": "echo", "hold": true})])
        .await
        .remove(0);
    let http = no_redirects();
    let sign_in = |token: String| sign_in_over_http(&console.url, token);
    let get = |cookie: String, path: String| {
        let http = http.clone();
        let url = console.url.clone();
        async move {
            http.get(format!("{url}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
        }
    };
    let post = |cookie: String, path: String, csrf: String| {
        let http = http.clone();
        let url = console.url.clone();
        async move { post_form(&http, &url, &cookie, &path, &csrf).await }
    };

    // No session: every page sends to sign-in, every action too.
    let r = get(String::new(), "/ui/jobs".into()).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login?next=%2Fui%2Fjobs");
    let r = post(String::new(), format!("/ui/jobs/{id}/cancel"), "x".into()).await;
    assert_eq!(r.status(), 303);

    // A read session: the page has a CSRF token, but cancelling is not its role's.
    let read = sign_in(console.token("read")).await;
    let page = get(read.clone(), "/ui".into()).await.text().await.unwrap();
    let token = csrf_of(&page);
    let r = post(read.clone(), format!("/ui/jobs/{id}/cancel"), token).await;
    assert_eq!(r.status(), 403);

    // A submit session: a forged form (no or another CSRF token) is refused, its own works.
    let submit = sign_in(console.token("submit")).await;
    let r = post(
        submit.clone(),
        format!("/ui/jobs/{id}/cancel"),
        "0".repeat(64),
    )
    .await;
    assert_eq!(r.status(), 403);
    let page = get(submit.clone(), "/ui".into())
        .await
        .text()
        .await
        .unwrap();
    let r = post(
        submit.clone(),
        format!("/ui/jobs/{id}/cancel"),
        csrf_of(&page),
    )
    .await;
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("note=Cancelled"),
        "{:?}",
        r.headers()
    );
    let job = console.api.job(&id).await;
    assert_eq!(job["state"], "cancelled", "{job}");

    // Revoking the token ends its sessions at once.
    let tokens = console.api.get("/v1/tokens").await;
    let submit_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "submit")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = console
        .api
        .request(reqwest::Method::DELETE, &format!("/v1/tokens/{submit_id}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = get(submit, "/ui".into()).await;
    assert_eq!(r.status(), 303, "a revoked token's session is over");
}

/// Sessions are kept in the store: one outlives a restart of its server, and signing out
/// ends it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_a_restart_and_signing_out_ends_it() {
    let data = tempfile::tempdir().unwrap();
    let (child, url) = serve_http(data.path(), &["--workers", "0"]);
    let server = Reap(child);
    let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let cookie = sign_in_over_http(&url, admin.trim().to_owned()).await;
    assert!(signed_in_page(&url, &cookie).await.is_some());
    assert!(
        signed_in_page(&url, "remotask_session=0000")
            .await
            .is_none(),
        "a made-up session is no session"
    );
    drop(server);

    let (child, url) = serve_http(data.path(), &["--workers", "0"]);
    let _server = Reap(child);
    let page = signed_in_page(&url, &cookie)
        .await
        .expect("the session outlived the restart");
    let r = post_form(
        &no_redirects(),
        &url,
        &cookie,
        "/ui/logout",
        &csrf_of(&page),
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
    assert!(signed_in_page(&url, &cookie).await.is_none(), "signed out");
}

/// The admin's pages: a token made in the console (its secret shown once) works on the API
/// until it is revoked there; a schedule is paused from its page; tasks show their versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_makes_and_revokes_tokens_pauses_schedules_and_sees_tasks() {
    let console = Console::start();
    let r = console
        .api
        .request(reqwest::Method::POST, "/v1/schedules")
        .json(
            &json!({"name": "nightly", "cron": "0 3 * * *", "task": "echo",
            "priority": 7, "overlap": "skip", "input": "nightly input"}),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let browser = Browser::start().await;
    console
        .sign_in(&browser, &console.api.admin, "/ui/tokens")
        .await;
    browser.type_into("input[name=name]", "ci").await;
    browser.click("form.filters button").await;
    let secret = browser.text("#secret").await;
    let api = |token: &str| {
        let http = reqwest::Client::new();
        let url = format!("{}/v1/tasks", console.url);
        let token = token.to_owned();
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(api(&secret).await, 200, "the new read token works");
    browser.open(&format!("{}/ui/tokens", console.url)).await;
    assert!(
        !browser.text("main").await.contains(&secret),
        "the secret is shown once"
    );
    browser.click("form[data-token='ci'] button").await;
    wait_until(&browser, ".note", |t| t.contains("revoked")).await;
    assert_eq!(api(&secret).await, 401, "a revoked token is refused");
    // The last admin token cannot be revoked, from the console either.
    browser.click("form[data-token='first admin'] button").await;
    wait_until(&browser, ".note", |t| t.contains("last live admin token")).await;

    browser.open(&format!("{}/ui/schedules", console.url)).await;
    let shown = browser.text("main").await;
    assert!(shown.contains("cron \"0 3 * * *\" in UTC"), "{shown}");
    browser
        .click("form[action='/ui/schedules/nightly/pause'] button")
        .await;
    wait_for_text(&browser, ".note", "Schedule nightly paused.").await;
    let nightly = console.api.get("/v1/schedules/nightly").await;
    assert_eq!(nightly["paused"], true, "{nightly}");

    // A new schedule from the form: its next fires previewed, then saved.
    browser.type_into("input[name=name]", "morning").await;
    browser.type_into("input[name=task]", "echo").await;
    browser.type_into("input[name=cron]", "30 4 * * *").await;
    browser.click("button[value=preview]").await;
    let fires = browser.text("#preview").await;
    assert_eq!(fires.lines().count(), 5, "{fires}");
    assert!(
        fires.lines().all(|l| l.ends_with("T04:30:00.000Z")),
        "{fires}"
    );
    browser.click("button[value=save]").await;
    wait_until(&browser, ".note", |t| {
        t.starts_with("Schedule morning saved")
    })
    .await;
    let morning = console.api.get("/v1/schedules/morning").await;
    assert_eq!(morning["spec"]["cron"], "30 4 * * *", "{morning}");
    // Editing fills the form; a cron that does not parse is refused, the form kept.
    browser.click("a[href='/ui/schedules?edit=nightly']").await;
    browser.wait_for("/ui/schedules?edit=nightly").await;
    let cron = browser
        .run("return document.querySelector('input[name=cron]').value;")
        .await;
    assert_eq!(cron, json!("0 3 * * *"));
    browser
        .run("document.querySelector('input[name=cron]').value = ''; return null;")
        .await;
    browser.type_into("input[name=cron]", "61 * * * *").await;
    browser.click("button[value=save]").await;
    wait_for_text(&browser, "h1", "Schedule not saved").await;
    browser
        .run("document.querySelector('input[name=cron]').value = ''; return null;")
        .await;
    browser.type_into("input[name=cron]", "15 2 * * *").await;
    browser.click("button[value=save]").await;
    wait_until(&browser, ".note", |t| {
        t.starts_with("Schedule nightly saved")
    })
    .await;
    let nightly = console.api.get("/v1/schedules/nightly").await;
    assert_eq!(nightly["spec"]["cron"], "15 2 * * *", "{nightly}");
    // What the form does not hold stays as it was.
    assert_eq!(nightly["paused"], true, "{nightly}");
    assert_eq!(nightly["overlap"], "skip", "{nightly}");
    assert_eq!(nightly["priority"], 7, "{nightly}");
    assert_eq!(nightly["input"], "nightly input", "{nightly}");
    // Field sets instead of cron: a bad list is refused, then saved; the form shows them.
    browser.click("a[href='/ui/schedules?edit=nightly']").await;
    browser.wait_for("/ui/schedules?edit=nightly").await;
    browser
        .run("document.querySelector('select[name=kind]').value = 'fields'; return null;")
        .await;
    browser.type_into("input[name=minute]", "0,x").await;
    browser.click("button[value=save]").await;
    wait_until(&browser, ".error", |t| {
        t.starts_with("minute: \"x\" is not a whole number")
    })
    .await;
    browser
        .run("document.querySelector('input[name=minute]').value = ''; return null;")
        .await;
    browser.type_into("input[name=minute]", "0,30").await;
    browser.type_into("input[name=hour]", "6").await;
    browser.click("button[value=save]").await;
    wait_until(&browser, ".note", |t| {
        t.starts_with("Schedule nightly saved")
    })
    .await;
    let nightly = console.api.get("/v1/schedules/nightly").await;
    assert_eq!(
        nightly["spec"],
        json!({"minute": [0, 30], "hour": [6]}),
        "{nightly}"
    );
    assert_eq!(nightly["paused"], true, "{nightly}");
    browser.click("a[href='/ui/schedules?edit=nightly']").await;
    browser.wait_for("/ui/schedules?edit=nightly").await;
    let shown = browser
        .run(
            "return ['kind', 'minute', 'hour', 'cron'].map(n => \
             document.querySelector(`[name=${n}]`).value);",
        )
        .await;
    assert_eq!(shown, json!(["fields", "0,30", "6", ""]));

    browser.open(&format!("{}/ui/tasks", console.url)).await;
    let tasks = console.api.get("/v1/tasks").await;
    let shown = browser.text("main").await;
    for task in tasks.as_array().unwrap() {
        let digest = task["digest"].as_str().unwrap();
        assert!(shown.contains(digest), "{digest} in {shown}");
    }
    browser.quit().await;
}

/// The job table's bulk actions: the jobs selected, then every job the filters match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_table_cancels_retries_and_deletes_the_selected_or_all_matching() {
    let console = Console::start();
    let job = || json!({"task": "echo", "hold": true, "context": "batch"});
    let ids = console.api.submit(vec![job(), job(), job()]).await;
    console
        .api
        .submit(vec![json!({"task": "echo", "hold": true})])
        .await;
    let browser = Browser::start().await;
    let table = "/ui/jobs?context=batch";
    console.sign_in(&browser, &console.api.admin, table).await;
    assert_eq!(browser.all("tbody tr").await.len(), 3);
    for id in &ids[..2] {
        browser.click(&format!("input[value='{id}']")).await;
    }
    browser.click("button[value=cancel]").await;
    wait_for_text(&browser, ".note", "Cancelled 2 jobs.").await;
    assert_eq!(
        states(&console.api, &ids).await,
        ["cancelled", "cancelled", "held"]
    );

    browser
        .open(&format!(
            "{}/ui/jobs?context=batch&state=cancelled",
            console.url
        ))
        .await;
    browser.click("button[value=retry-all]").await;
    wait_for_text(&browser, ".note", "Retried 2 jobs.").await;
    assert_eq!(
        states(&console.api, &ids).await,
        ["queued", "queued", "held"]
    );

    browser.open(&format!("{}{table}", console.url)).await;
    browser.click("button[value=cancel-all]").await;
    wait_for_text(&browser, ".note", "Cancelled 3 matching jobs.").await;
    browser.click("button[value=delete-all]").await;
    wait_for_text(&browser, ".note", "Deleted 3 jobs.").await;
    let left = console.api.get("/v1/jobs").await;
    assert_eq!(
        left["jobs"].as_array().unwrap().len(),
        1,
        "the job without the context"
    );
    browser.quit().await;
}

/// The state of each job of `ids`.
async fn states(api: &Api, ids: &[String]) -> Vec<String> {
    let mut states = Vec::new();
    for id in ids {
        states.push(api.job(id).await["state"].as_str().unwrap().to_owned());
    }
    states
}

/// The dashboard: jobs by state, the last hour's completed and failed jobs, the newest
/// failures with their reasons, and the slowest tasks; a schedule's last job and result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_last_hour_the_newest_failures_and_the_slowest_tasks() {
    let console = Console::with_workers("1");
    let ok = console
        .api
        .submit(vec![json!({"task": "echo", "input": {"n": 1}})])
        .await;
    let bad = console
        .api
        .submit(vec![
            json!({"task": "hostile", "args": ["exit", "3"], "retry": {"retries": 0}}),
        ])
        .await;
    let ended = console
        .api
        .wait_ended(&[ok[0].clone(), bad[0].clone()], Duration::from_secs(30))
        .await;
    assert_eq!(ended[1]["state"], "failed", "{}", ended[1]);
    let browser = Browser::start().await;
    console.sign_in(&browser, &console.api.admin, "/ui").await;
    let caption = browser.text("figcaption").await;
    assert!(
        caption.starts_with("1 completed, 1 failed in the last hour"),
        "{caption}"
    );
    let bars = browser.all("svg.chart rect").await.len();
    assert_eq!(bars, 120, "two bars a minute for an hour");
    let page = browser.text("main").await;
    assert!(page.contains(&bad[0]), "the failure is listed: {page}");
    assert!(page.contains("guest_error"), "{page}");
    let slowest = browser.text("#slowest tbody").await;
    assert!(slowest.starts_with("echo 1"), "{slowest}");

    // A failed attempt's page offers its repro bundle.
    browser
        .open(&format!("{}/ui/jobs/{}", console.url, bad[0]))
        .await;
    let link = format!("a[href='/ui/live/bundle/{}/1']", bad[0]);
    assert_eq!(browser.text(&link).await, "Download the repro bundle");
    let head = browser
        .run(&format!(
            "return fetch('/ui/live/bundle/{}/1').then(async r => \
             [r.status, (await r.text()).split('\\n')[0]]);",
            bad[0]
        ))
        .await;
    assert_eq!(head, json!([200, "remotask-bundle 1"]), "{head}");

    // A completed job's output is saved as a file, in the session.
    let saved = browser
        .run(&format!(
            "return fetch('/ui/live/output/{}').then(async r => \
             [r.status, r.headers.get('content-disposition'), await r.text()]);",
            ok[0]
        ))
        .await;
    assert_eq!(
        saved,
        json!([
            200,
            format!("attachment; filename=\"{}.out\"", ok[0]),
            "{\"n\":1}"
        ]),
        "{saved}"
    );

    // A schedule's page shows its last job and what that job gave.
    let r = console
        .api
        .request(reqwest::Method::POST, "/v1/schedules")
        .json(&json!({"name": "soon", "delay_seconds": 0, "task": "echo",
            "input": {"from": "soon"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let fired = loop {
        let soon = console.api.get("/v1/schedules/soon").await;
        if let Some(id) = soon["last_job"]["id"].as_str() {
            break id.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "{soon}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    console
        .api
        .wait_ended(std::slice::from_ref(&fired), Duration::from_secs(30))
        .await;
    browser.open(&format!("{}/ui/schedules", console.url)).await;
    let shown = browser.text("section[aria-label='Schedule soon'] dl").await;
    assert!(
        shown.contains(&format!("Last job\n{fired} completed")),
        "{shown}"
    );
    assert!(
        shown.contains("Last result\n{\"from\":\"soon\"}"),
        "{shown}"
    );

    // Every page at a desktop's and a phone's width, for a person to look at.
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let pages = [
        ("dashboard", "/ui".to_owned()),
        ("jobs", "/ui/jobs".to_owned()),
        ("job", format!("/ui/jobs/{}", bad[0])),
        ("queues", "/ui/queues".to_owned()),
        ("tasks", "/ui/tasks".to_owned()),
        ("schedules", "/ui/schedules".to_owned()),
        ("tokens", "/ui/tokens".to_owned()),
        ("workers", "/ui/workers".to_owned()),
    ];
    for width in [1280, 375] {
        browser.resize(width, 900).await;
        for (name, path) in &pages {
            browser.open(&format!("{}{path}", console.url)).await;
            browser.one("h1").await;
            let file = shots.join(format!("{name}-{width}.png"));
            browser.screenshot(&file).await;
            assert!(
                std::fs::metadata(&file).unwrap().len() > 1000,
                "{}",
                file.display()
            );
        }
    }
    browser.quit().await;
}

/// With its script, the console is live: a job's page shows its progress as the guest
/// reports it and redraws itself when the job ends; the job table's rows change state in
/// place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_page_and_the_job_table_follow_a_job_live() {
    let console = Console::with_workers("1");
    let id = console
        .api
        .submit(vec![
            json!({"task": "hostile", "args": ["progress-sleep", "7", "2"]}),
        ])
        .await
        .remove(0);
    console.api.running_on(&id).await;
    let browser = Browser::start().await;
    let page = format!("/ui/jobs/{id}");
    console.sign_in(&browser, &console.api.admin, &page).await;
    browser.run("window.kept = true; return null;").await;
    wait_for_text(&browser, "#job-progress + span", "7/7").await;
    assert_eq!(
        browser.run("return window.kept === true;").await,
        json!(true)
    );
    // The end redraws the page, with the output.
    wait_for_text(&browser, "#job-state", "completed").await;
    assert!(browser.text("main").await.contains("done"));

    // A job submitted over the API comes into the open table, and its row turns completed.
    browser.open(&format!("{}/ui/jobs", console.url)).await;
    browser.run("window.kept = true; return null;").await;
    let sleeper = console
        .api
        .submit(vec![json!({"task": "hostile", "args": ["sleep", "1.5"]})])
        .await
        .remove(0);
    let cell = format!("#job-{sleeper} td[data-state]");
    wait_for_text(&browser, &cell, "completed").await;
    assert_eq!(
        browser.run("return window.kept === true;").await,
        json!(true),
        "the row came and changed in place"
    );

    // A running job cancelled from its page shows `cancelled`.
    let long = console
        .api
        .submit(vec![json!({"task": "hostile", "args": ["sleep", "60"]})])
        .await
        .remove(0);
    console.api.running_on(&long).await;
    browser
        .open(&format!("{}/ui/jobs/{long}", console.url))
        .await;
    browser
        .click(&format!("form[action='/ui/jobs/{long}/cancel'] button"))
        .await;
    wait_for_text(&browser, "#job-state", "cancelled").await;
    browser.quit().await;
}

/// Waits up to 20 s until the one element `css` reads `text` (after a click, the page it
/// leads to may not have replaced the one clicked on yet).
async fn wait_for_text(browser: &Browser, css: &str, text: &str) {
    wait_until(browser, css, |t| t == text).await;
}

/// Waits up to 20 s until the text of the one element `css` satisfies `good`.
async fn wait_until(browser: &Browser, css: &str, good: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = browser.text(css).await;
        if good(now.trim()) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{css} reads {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An admin uploads a module from the tasks page and sees its admission report; a file that
/// is no module is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_uploaded_from_the_form_shows_its_report_or_why_it_was_refused() {
    let console = Console::start();
    let files = tempfile::tempdir().unwrap();
    let good = files.path().join("echo.wasm");
    std::fs::copy(crate::support::guest("echo"), &good).unwrap();
    let bad = files.path().join("notes.wasm");
    std::fs::write(&bad, "these are notes, not a module").unwrap();
    let browser = Browser::start().await;
    console
        .sign_in(&browser, &console.api.admin, "/ui/tasks")
        .await;
    browser.type_into("input[name=name]", "uploaded").await;
    browser
        .type_into("input[name=module]", good.to_str().unwrap())
        .await;
    browser.click("form[enctype] button").await;
    wait_for_text(&browser, "h1", "Task uploaded registered").await;
    let report = browser.text("main").await;
    assert!(report.contains("_start (func)"), "{report}");
    assert!(
        report.contains("wasi_snapshot_preview1.fd_write"),
        "{report}"
    );
    let task = console.api.get("/v1/tasks/uploaded").await;
    assert!(report.contains(task["digest"].as_str().unwrap()), "{task}");
    // A stored version's page shows its admission report again.
    let digest = task["digest"].as_str().unwrap().to_owned();
    browser.open(&format!("{}/ui/tasks", console.url)).await;
    browser
        .click(&format!("a[href='/ui/tasks/uploaded/versions/{digest}']"))
        .await;
    browser
        .wait_for(&format!("/ui/tasks/uploaded/versions/{digest}"))
        .await;
    assert!(
        browser
            .text("h1")
            .await
            .starts_with("Task uploaded, version")
    );
    assert!(browser.text("main").await.contains("_start (func)"));

    browser.open(&format!("{}/ui/tasks", console.url)).await;
    browser.type_into("input[name=name]", "notes").await;
    browser
        .type_into("input[name=module]", bad.to_str().unwrap())
        .await;
    browser.click("form[enctype] button").await;
    wait_for_text(&browser, "h1", "Module refused").await;
    let why = browser.text(".error").await;
    assert!(why.contains("not a wasm binary"), "{why}");
    browser.quit().await;
}

/// The workers page names a remote worker attached to the server and the job it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_page_shows_a_remote_worker_and_what_it_runs() {
    let console = Console::start();
    let token = console.token("worker");
    let mut child = crate::support::remotask()
        .args(["worker", "--server", &console.url, "--token", &token])
        .args(["--name", "w-console", "--threads", "1", "--cache-dir"])
        .arg(crate::remote::shared_cache())
        .env_remove("REMOTASK_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("remotask worker starts");
    crate::remote::wait_ready(&mut child);
    let _worker = crate::remote::Proc(child);
    let id = console
        .api
        .submit(vec![json!({"task": "hostile", "args": ["sleep", "60"]})])
        .await
        .remove(0);
    assert_eq!(console.api.running_on(&id).await, "w-console");
    let browser = Browser::start().await;
    console
        .sign_in(&browser, &console.api.admin, "/ui/workers")
        .await;
    let shown = browser.text("main").await;
    for words in ["w-console", "connected", &id, "hostile in default"] {
        assert!(shown.contains(words), "{words:?} in {shown}");
    }
    browser.quit().await;
}

/// WCAG's contrast ratio of two `#rrggbb` colours.
fn contrast(a: &str, b: &str) -> f64 {
    let luminance = |hex: &str| {
        let channel = |i: usize| {
            let c = f64::from(u8::from_str_radix(&hex[1 + 2 * i..3 + 2 * i], 16).unwrap()) / 255.0;
            if c <= 0.03928 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * channel(0) + 0.7152 * channel(1) + 0.0722 * channel(2)
    };
    let (x, y) = (luminance(a), luminance(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

/// Every colour of text is readable on both backgrounds, light and dark (WCAG AA: 4.5:1), and
/// form fields' edges stand out from them (3:1), read from the stylesheet the server embeds.
#[test]
fn the_stylesheet_has_readable_contrast_in_light_and_dark() {
    let css = include_str!("../../src/http/ui/console.css");
    let schemes: Vec<std::collections::HashMap<&str, &str>> = css
        .split(":root {")
        .skip(1)
        .map(|block| {
            block[..block.find('}').unwrap()]
                .split(';')
                .filter_map(|decl| decl.trim().strip_prefix("--")?.split_once(':'))
                .map(|(name, value)| (name.trim(), value.trim()))
                .collect()
        })
        .collect();
    assert_eq!(schemes.len(), 2, "a light and a dark palette");
    for palette in &schemes {
        for background in ["bg", "panel"] {
            for text in ["fg", "muted", "accent", "ok", "bad", "warn"] {
                let ratio = contrast(palette[text], palette[background]);
                assert!(
                    ratio >= 4.5,
                    "{text} on {background} is {ratio:.2}:1 in {palette:?}"
                );
            }
            let ratio = contrast(palette["edge"], palette[background]);
            assert!(
                ratio >= 3.0,
                "edges on {background} are {ratio:.2}:1 in {palette:?}"
            );
        }
    }
    let fields = css
        .split("input, select, button, textarea {")
        .nth(1)
        .unwrap();
    assert!(
        fields[..fields.find('}').unwrap()].contains("solid var(--edge)"),
        "form fields are edged with --edge"
    );
}
