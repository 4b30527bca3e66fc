//! A real browser for the console's tests: headless Chromium driven over WebDriver by
//! Debian's `chromedriver`, with the few commands the tests use (open a page, find elements
//! by CSS selector, type, click, read text, run a script, size the window).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::remote::free_port;

/// `chromedriver` and one browser session; both end when this is dropped.
pub(crate) struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A browser that takes any server certificate (`acceptInsecureCerts`), for a server
    /// whose certificate a test made.
    pub(crate) async fn trusting_any_certificate() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(any_certificate: bool) -> Self {
        // reqwest is built without a TLS provider of its own; this process's default is ring.
        remotask::cli::install_default_provider();
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs: scripts/setup installs it");
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{root}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // As root Chromium needs --no-sandbox; the rest keep it off this closed network.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": any_certificate,
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let session: Value = http
            .post(format!("{root}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {session}"));
        let browser = Self {
            driver,
            base: format!("{root}/session/{id}"),
            http,
            profile,
        };
        // A desktop's window; a test makes it a phone's when it means to.
        browser.resize(1280, 900).await;
        browser
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_call(method, path, body).await {
            Ok(value) => value,
            Err(error) => panic!("WebDriver {path}: {error}"),
        }
    }

    /// A WebDriver command's value, or its error.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        if answer["value"]["error"].is_string() {
            return Err(answer["value"].clone());
        }
        Ok(answer["value"].clone())
    }

    pub(crate) async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub(crate) async fn url(&self) -> String {
        let v = self.call(reqwest::Method::GET, "/url", None).await;
        v.as_str().unwrap().to_owned()
    }

    /// Waits (up to 10 s) until the page's URL ends with `end`, after a click that navigates.
    pub(crate) async fn wait_for(&self, end: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.url().await;
            if url.ends_with(end) {
                return;
            }
            assert!(Instant::now() < deadline, "{url} is not {end}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The elements matching `css`, as WebDriver references.
    pub(crate) async fn all(&self, css: &str) -> Vec<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e.as_object()
                    .unwrap()
                    .values()
                    .next()
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// The one element matching `css`, waited for up to 10 s (a page may still be loading).
    pub(crate) async fn one(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut found = self.all(css).await;
            if found.len() == 1 {
                return found.remove(0);
            }
            assert!(
                Instant::now() < deadline,
                "{} elements {css} on {}",
                found.len(),
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let e = self.one(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    pub(crate) async fn click(&self, css: &str) {
        let e = self.one(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// The visible text of the one element matching `css` (table cells apart by a space, as
    /// WebDriver's element text has them), read in one script so that a page being replaced
    /// under it (a navigation that had not ended, a live update) cannot leave a stale
    /// reference between finding the element and reading it.
    pub(crate) async fn text(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let script = format!(
            "const found = document.querySelectorAll({}); \
             return found.length === 1 ? found[0].innerText.replace(/\\t/g, ' ') : found.length;",
            Value::from(css)
        );
        let body = json!({"script": script, "args": []});
        loop {
            // A script that meets a page between two documents fails; it is run again.
            let answer = self
                .try_call(reqwest::Method::POST, "/execute/sync", Some(body.clone()))
                .await;
            match answer {
                Ok(Value::String(text)) => return text,
                other => assert!(
                    Instant::now() < deadline,
                    "{css} on {}: {other:?}",
                    self.url().await
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Presses and releases the Tab key, as a person moving through a page by keyboard.
    pub(crate) async fn press_tab(&self) {
        let tab = "\u{E004}";
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": tab}, {"type": "keyUp", "value": tab}]}]});
        self.call(reqwest::Method::POST, "/actions", Some(actions))
            .await;
    }

    /// What `script` (a function body) returns in the page.
    pub(crate) async fn run(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Writes a PNG of the window to `path`.
    pub(crate) async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    pub(crate) async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }
}

impl Browser {
    /// Ends the session (the browser exits), then the driver.
    pub(crate) async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A browser left by a test that failed before `quit`.
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.profile.path())
            .status();
    }
}
