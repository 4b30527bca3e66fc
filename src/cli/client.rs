//! The HTTP client the CLI uses: where the server is (`http://` or `https://`), which token to
//! send, which CA to trust besides the platform's, and turning error answers
//! (`{"error": {"code", "message"}}`) into readable errors. It speaks the wire types of
//! `crate::http::dto`, the same the server uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::tls;
use crate::config::DEFAULT_BIND;
use crate::http::{ErrorBody, admin_token_path};

/// Where the server is and who we are. Flags win over `REMOTASK_*` env, which wins over the
/// client config file; without a token, a CLI talking to a server on this machine uses the
/// admin token the server wrote into its data directory.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The server's URL [default: http://127.0.0.1:7070].
    #[arg(long, env = "REMOTASK_SERVER", global = true)]
    pub server: Option<String>,
    /// The API token (a `rt_...` secret).
    #[arg(long, env = "REMOTASK_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The local server's data directory, to find its admin token [default: remotask-data].
    #[arg(long, env = "REMOTASK_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for an https:// server, besides the platform's roots:
    /// for a server whose certificate a private CA signed.
    #[arg(long, env = "REMOTASK_CA_CERT", global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// A client config file (TOML: `server`, `token`, `ca_cert`) [default:
    /// $XDG_CONFIG_HOME/remotask/client.toml].
    #[arg(long, env = "REMOTASK_CLIENT_CONFIG", global = true)]
    pub client_config: Option<PathBuf>,
    /// Print JSON (the API's answer) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    server: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
}

impl Connection {
    fn config_file(&self) -> anyhow::Result<ClientFile> {
        let (path, explicit) = match &self.client_config {
            Some(p) => (p.clone(), true),
            None => {
                let base = std::env::var_os("XDG_CONFIG_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")));
                match base {
                    Some(b) => (b.join("remotask/client.toml"), false),
                    None => return Ok(ClientFile::default()),
                }
            }
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("client config {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(ClientFile::default())
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// A client for these settings.
    pub fn client(&self) -> anyhow::Result<Client> {
        let file = self.config_file()?;
        let server = self
            .server
            .clone()
            .or(file.server)
            .unwrap_or_else(|| format!("http://{DEFAULT_BIND}"));
        let base = reqwest::Url::parse(server.trim_end_matches('/'))
            .with_context(|| format!("the server URL {server:?} is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!(
                "the server URL must be http:// or https://, got {}://",
                base.scheme()
            );
        }
        let ca_cert = self.ca_cert.clone().or(file.ca_cert);
        let token = match self.token.clone().or(file.token) {
            Some(t) => Some(t),
            None if is_loopback(&base) => {
                let dir = self
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("remotask-data"));
                std::fs::read_to_string(admin_token_path(&dir))
                    .ok()
                    .map(|t| t.trim().to_owned())
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tls_backend_preconfigured(tls::client_config(ca_cert.as_deref())?)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client {
            http,
            base: base.as_str().trim_end_matches('/').to_owned(),
            token,
        })
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("");
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The rustls error in `e`'s chain, if TLS is what failed (an io::Error hides the error it
/// wraps from `source()`, so those are opened too).
fn tls_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| tls_error(inner))
        {
            return Some(inner);
        }
        next = e.source();
    }
    None
}

/// Talks to one server with one token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// The configured HTTP client (timeouts, TLS roots), for requests this type does not
    /// make itself.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The server's base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends `request`; a non-2xx answer becomes an error with the server's message.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request.send().await.map_err(|e| {
            if let Some(tls) = tls_error(&e) {
                if matches!(tls, rustls::Error::InvalidCertificate(_)) {
                    anyhow!(
                        "the server at {} has a TLS certificate this client does not trust: {tls} \
                         (if a private CA signed it, give its certificate with --ca-cert or \
                         REMOTASK_CA_CERT)",
                        self.base
                    )
                } else {
                    anyhow!("TLS with the server at {} failed: {tls}", self.base)
                }
            } else if e.is_connect() {
                anyhow!(
                    "cannot reach the server at {} (is `remotask serve` running?): {e}",
                    self.base
                )
            } else {
                anyhow!("request to {} failed: {e}", self.base)
            }
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => format!(
                "{} ({}, HTTP {})",
                body.error.message,
                body.error.code,
                status.as_u16()
            ),
            Err(_) => format!("HTTP {status}: {}", text.trim()),
        };
        if status == StatusCode::UNAUTHORIZED && self.token.is_none() {
            bail!("{message}; give a token with --token or REMOTASK_TOKEN");
        }
        bail!("{message}")
    }

    /// Sends `request` and parses a JSON answer.
    pub async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> anyhow::Result<T> {
        let response = self.send(request).await?;
        let bytes = response
            .bytes()
            .await
            .context("the answer could not be read")?;
        serde_json::from_slice(&bytes)
            .context("the server's answer is not what this client expects")
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.json(self.request(Method::GET, path)).await
    }
}
