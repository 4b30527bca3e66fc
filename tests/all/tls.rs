//! HTTPS end to end: a CA and a server certificate made here (rcgen), a real `remotask serve
//! --tls-cert --tls-key`, and the real CLI over `https://`, trusting the CA with `--ca-cert`
//! and refusing the server without it. Also what `serve` refuses, and its warning when it
//! serves plain HTTP beyond this machine.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::serve::{Reap, cli, serve_at, serve_http};
use crate::support::{guest, remotask};

/// PEM files in a directory: a CA certificate, and a certificate for 127.0.0.1 and localhost
/// that the CA signed, with its key.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "remotask test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "remotask test server");
        let cert = server.signed_by(&key, &issuer).unwrap();

        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `serve` flags that use them.
    fn serve_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".to_owned(),
            self.path("server.pem").display().to_string(),
            "--tls-key".to_owned(),
            self.path("server.key").display().to_string(),
        ]
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_end_to_end_with_a_self_signed_ca_made_in_the_test() {
    let certs = Certificates::new();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let mut flags = certs.serve_flags();
    flags.extend(["--workers".to_owned(), "1".to_owned()]);
    let (server, url) = serve_http(d, &strs(&flags));
    let mut server = Reap(server);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = certs.path("ca.pem");
    let ca = ca.to_str().unwrap();
    let ok = |(code, out, err): (i32, String, String)| {
        assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
        out
    };

    let echo = guest("echo");
    let out = ok(cli(
        &url,
        d,
        &[
            "task",
            "upload",
            "echo",
            echo.to_str().unwrap(),
            "--ca-cert",
            ca,
        ],
    ));
    assert!(out.starts_with("uploaded echo version "), "{out}");
    let out = ok(cli(
        &url,
        d,
        &[
            "job",
            "submit",
            "echo",
            "--input",
            r#"{"over": "tls"}"#,
            "--wait",
            "--ca-cert",
            ca,
        ],
    ));
    assert_eq!(out, r#"{"over":"tls"}"#);

    // Without the CA, the server's certificate is not trusted, and the error says so.
    let (code, _, err) = cli(&url, d, &["task", "list"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("has a TLS certificate this client does not trust")
            && err.contains("UnknownIssuer")
            && err.contains("--ca-cert"),
        "{err}"
    );
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = url.replacen("https://", "http://", 1);
    let (code, _, err) = cli(&plain, d, &["task", "list"]);
    assert_eq!(code, 2, "{err}");

    // The CA from the environment, and the graceful stop, as over HTTP.
    let out = remotask()
        .args(["task", "list", "--server", &url, "--data-dir"])
        .arg(d)
        .env("XDG_CONFIG_HOME", d)
        .env("REMOTASK_CA_CERT", ca)
        .env_remove("REMOTASK_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\necho "),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::process::Command::new("kill")
        .arg(server.0.id().to_string())
        .status()
        .unwrap();
    assert!(server.0.wait().unwrap().success());
}

/// `remotask serve` with `args`, expected to refuse to start: its stderr.
fn serve_refuses(data_dir: &Path, args: &[&str]) -> String {
    let out = remotask()
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_certificate_without_its_key_and_files_it_cannot_use() {
    let certs = Certificates::new();
    let data = tempfile::tempdir().unwrap();
    let d = data.path().join("data");
    let cert = certs.path("server.pem");
    let cert = cert.to_str().unwrap();
    let key = certs.path("server.key");
    let key = key.to_str().unwrap();

    let err = serve_refuses(&d, &["--tls-cert", cert]);
    assert!(
        err.contains(&format!(
            "tls_cert (--tls-cert) is {cert} but no tls_key (--tls-key) is given"
        )),
        "{err}"
    );
    let err = serve_refuses(&d, &["--tls-key", key]);
    assert!(err.contains("no tls_cert (--tls-cert)"), "{err}");

    let missing = data.path().join("missing.key");
    let missing = missing.to_str().unwrap();
    let err = serve_refuses(&d, &["--tls-cert", cert, "--tls-key", missing]);
    assert!(
        err.contains(&format!("cannot read the TLS key file {missing}")),
        "{err}"
    );
    // A key where the certificate should be, and the other way round.
    let err = serve_refuses(&d, &["--tls-cert", key, "--tls-key", key]);
    assert!(
        err.contains(&format!(
            "the TLS certificate file {key} holds no certificate in PEM form"
        )),
        "{err}"
    );
    let err = serve_refuses(&d, &["--tls-cert", cert, "--tls-key", cert]);
    assert!(
        err.contains(&format!("the TLS key file {cert} holds no private key")),
        "{err}"
    );
    // A key that is not the certificate's.
    let other = data.path().join("other.key");
    std::fs::write(&other, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let other = other.to_str().unwrap();
    let err = serve_refuses(&d, &["--tls-cert", cert, "--tls-key", other]);
    assert!(
        err.contains(&format!(
            "the TLS certificate {cert} and key {other} cannot be used together"
        )),
        "{err}"
    );
    assert!(!d.exists(), "refused before the data directory was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_when_it_serves_plain_http_beyond_this_machine() {
    let warning = "the API is served in plain HTTP on 0.0.0.0:";
    let data = tempfile::tempdir().unwrap();
    let (server, url, lines) = serve_at(data.path(), "0.0.0.0:0", &[]);
    let _server = Reap(server);
    assert!(url.starts_with("http://0.0.0.0:"), "{url}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains(warning) && l.contains("--tls-cert")),
        "{lines:?}"
    );
    drop(_server);

    // Not on loopback, nor with TLS.
    let (server, _, lines) = serve_at(data.path(), "127.0.0.1:0", &[]);
    drop(Reap(server));
    assert!(!lines.iter().any(|l| l.contains("plain HTTP")), "{lines:?}");
    let certs = Certificates::new();
    let (server, url, lines) = serve_at(data.path(), "0.0.0.0:0", &strs(&certs.serve_flags()));
    drop(Reap(server));
    assert!(url.starts_with("https://0.0.0.0:"), "{url}");
    assert!(!lines.iter().any(|l| l.contains("plain HTTP")), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_worker_leases_and_reports_over_https_with_a_private_ca() {
    let certs = Certificates::new();
    let data = tempfile::tempdir().unwrap();
    let modules = tempfile::tempdir().unwrap();
    std::fs::copy(guest("echo"), modules.path().join("echo.wasm")).unwrap();
    let d = data.path();
    let mut flags = certs.serve_flags();
    flags.extend(["--workers", "0", "--register-dir"].map(str::to_owned));
    flags.push(modules.path().display().to_string());
    let (server, url) = serve_http(d, &strs(&flags));
    let _server = Reap(server);
    let ca = certs.path("ca.pem");
    let ca = ca.to_str().unwrap();
    let (code, token, err) = cli(
        &url,
        d,
        &[
            "token",
            "create",
            "--role",
            "worker",
            "--name",
            "w",
            "--ca-cert",
            ca,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let cache = tempfile::tempdir().unwrap();
    let mut worker = remotask()
        .args([
            "worker",
            "--server",
            &url,
            "--token",
            token.trim(),
            "--ca-cert",
            ca,
        ])
        .arg("--cache-dir")
        .arg(cache.path())
        .env_remove("REMOTASK_TOKEN")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::remote::wait_ready(&mut worker);
    let _worker = Reap(worker);
    let (code, out, err) = cli(
        &url,
        d,
        &[
            "job",
            "submit",
            "echo",
            "--input",
            "[1, 2]",
            "--wait",
            "--ca-cert",
            ca,
        ],
    );
    assert_eq!((code, out.as_str()), (0, "[1,2]"), "{err}");
}

/// Over TLS, a browser gets HTTP/2 (ALPN), so the console's pages and event streams share one
/// connection; the CLI, which offers HTTP/1.1 only, still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_gets_http2_over_tls_and_the_cli_still_works() {
    let certs = Certificates::new();
    let data = tempfile::tempdir().unwrap();
    let (child, url, _) = serve_at(
        data.path(),
        "127.0.0.1:0",
        &strs(&[certs.serve_flags(), vec!["--workers".into(), "0".into()]].concat()),
    );
    let _server = Reap(child);
    assert!(url.starts_with("https://"), "{url}");
    let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let browser = crate::browser::Browser::trusting_any_certificate().await;
    browser.open(&format!("{url}/ui/login")).await;
    browser.type_into("#token", admin.trim()).await;
    browser.click("form.login button[type=submit]").await;
    browser.wait_for("/ui").await;
    browser.open(&format!("{url}/ui/jobs")).await;
    let protocol = browser
        .run("return performance.getEntriesByType('navigation')[0].nextHopProtocol;")
        .await;
    assert_eq!(protocol, "h2", "the job table over HTTP/2");
    browser.quit().await;

    let ca = certs.path("ca.pem");
    let (code, out, err) = cli(
        &url,
        data.path(),
        &["token", "list", "--ca-cert", ca.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("first admin"), "{out}");
}
