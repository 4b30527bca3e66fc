//! The worker's [`Source`] over the lease API: `remotask worker` runs the same pool as
//! `remotask serve`, and this is all that differs. Leases are long-polled; heartbeats carry
//! the guests' progress; ended attempts are reported many per call; cancels come pushed on
//! an event stream kept open (and reopened with backoff), heartbeat answers being the
//! fallback. Modules are fetched by digest once, checked against it, and kept in a local
//! directory, so a restart fetches and compiles nothing.
//!
//! What it does not do: retry. A failed call is the pool's to retry (with backoff), so
//! attempts go on running while the server is away and are reported when it is back.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cli::Client;
use crate::domain::{JobId, Lease, ModuleDigest};
use crate::http::ErrorBody;
use crate::http::dto::{
    CancelEventDto, CursorDto, EndedDto, HeartbeatAnswer, HeartbeatRequest, HeldLease, LeaseGrant,
    LeaseRequest, ProgressDto, ReportAnswer, ReportRequest,
};
use crate::store::BlobStore;
use crate::worker::{
    Cancel, ClaimAsk, Ended, Granted, LeaseState, Progress, Source, SourceError, SourceResult, Stop,
};

/// The lease API of one server, for one worker.
#[derive(Debug)]
pub(crate) struct HttpSource {
    client: Client,
    worker: String,
    threads: u32,
    /// Modules fetched so far, by digest.
    modules: BlobStore,
    cancels: tokio::sync::broadcast::Sender<Cancel>,
}

/// Why a call failed, as the pool's logs show it.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Server(String),
    #[error("module {digest} from the server is not that module: its bytes hash to {actual}")]
    WrongModule {
        digest: ModuleDigest,
        actual: ModuleDigest,
    },
}

fn failed(e: impl std::fmt::Display) -> SourceError {
    SourceError::Failed(Box::new(CallError::Server(e.to_string())))
}

impl HttpSource {
    pub(crate) fn new(client: Client, worker: String, threads: u32, modules: BlobStore) -> Self {
        Self {
            client,
            worker,
            threads,
            modules,
            cancels: tokio::sync::broadcast::channel(1024).0,
        }
    }

    /// Posts `body` to `path`; the answer's JSON, also when it is a 409 (some leases refused,
    /// the answer says which).
    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> SourceResult<T> {
        let response = self
            .client
            .request(Method::POST, path)
            .timeout(Duration::from_secs(90))
            .json(body)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(failed)?;
        if (status.is_success() || status == StatusCode::CONFLICT)
            && let Ok(answer) = serde_json::from_slice(&bytes)
        {
            return Ok(answer);
        }
        let message = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => format!(
                "{path}: {} ({}, HTTP {status})",
                e.error.message, e.error.code
            ),
            Err(_) => format!("{path}: HTTP {status}"),
        };
        Err(failed(message))
    }

    fn held(leases: Vec<(JobId, Lease)>, progress: &[Progress]) -> Vec<HeldLease> {
        leases
            .into_iter()
            .map(|(id, lease)| HeldLease {
                id: id.to_string(),
                token: lease.token,
                progress: progress.iter().find(|p| p.id == id).map(|p| ProgressDto {
                    done: p.done,
                    total: p.total,
                }),
            })
            .collect()
    }

    /// Keeps the server's stream of this worker's cancels open, reopening it with backoff,
    /// and passes each cancel on. Ends when nobody listens.
    pub(crate) async fn listen_for_cancels(&self) {
        let path = format!("/v1/leases/events?worker={}", self.worker);
        let mut backoff = Backoff::new();
        while self.cancels.receiver_count() > 0 {
            let response = self.client.request(Method::GET, &path).send().await;
            match response {
                Ok(r) if r.status().is_success() => {
                    backoff.reset();
                    self.read_cancels(r).await;
                }
                Ok(r) => tracing::warn!(status = %r.status(), "the cancel stream was refused"),
                Err(e) => tracing::debug!(error = %e, "the cancel stream could not be opened"),
            }
            backoff.wait().await;
        }
    }

    /// Reads `event: cancel` events from an open stream until it ends.
    async fn read_cancels(&self, mut response: reqwest::Response) {
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if let Some(id) = cancel_of(&event) {
                    let _ = self.cancels.send(Cancel {
                        id,
                        worker: Some(self.worker.clone()),
                    });
                }
            }
        }
    }
}

/// The job of an `event: cancel` server-sent event.
fn cancel_of(event: &str) -> Option<JobId> {
    let mut kind = None;
    let mut data = None;
    for line in event.lines() {
        if let Some(k) = line.strip_prefix("event:") {
            kind = Some(k.trim());
        } else if let Some(d) = line.strip_prefix("data:") {
            data = Some(d.trim());
        }
    }
    if kind != Some("cancel") {
        return None;
    }
    let dto: CancelEventDto = serde_json::from_str(data?).ok()?;
    dto.id.parse().ok()
}

/// Waits that grow from 100 ms to 5 s.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Self(Self::FIRST)
    }

    pub(crate) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Self::MAX);
    }
}

#[async_trait::async_trait]
impl Source for HttpSource {
    async fn claim(&self, ask: ClaimAsk, _stop: &Stop) -> SourceResult<Granted> {
        // Not cut short by a stop: jobs the server leased meanwhile would be lost until their
        // leases expired. The pool gives back what comes after a stop; the wait is short.
        let request = LeaseRequest {
            worker: self.worker.clone(),
            queues: ask.queues.iter().map(ToString::to_string).collect(),
            max: ask.max.min(1000),
            wait_seconds: ask.wait.as_secs_f64(),
            lease_seconds: Some(ask.lease_ttl.as_secs_f64()),
            threads: Some(self.threads),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            cursor: ask.after.as_ref().map(CursorDto::from_cursor),
        };
        let grant: LeaseGrant = self.post("/v1/leases", &request).await?;
        let work = grant
            .jobs
            .into_iter()
            .map(|j| j.into_work().map_err(failed))
            .collect::<SourceResult<Vec<_>>>()?;
        Ok(Granted {
            work,
            cursor: grant.cursor.map(|c| c.to_cursor()),
        })
    }

    async fn heartbeat(
        &self,
        leases: Vec<(JobId, Lease)>,
        ttl: Duration,
    ) -> SourceResult<Vec<LeaseState>> {
        let request = HeartbeatRequest {
            worker: self.worker.clone(),
            lease_seconds: Some(ttl.as_secs_f64()),
            leases: Self::held(leases, &[]),
        };
        let answer: HeartbeatAnswer = self.post("/v1/leases/heartbeat", &request).await?;
        answer
            .leases
            .iter()
            .map(|l| l.to_state().map_err(failed))
            .collect()
    }

    async fn progress(&self, updates: Vec<Progress>) -> SourceResult<()> {
        let leases = updates.iter().map(|p| (p.id, p.lease)).collect();
        let request = HeartbeatRequest {
            worker: self.worker.clone(),
            lease_seconds: None,
            leases: Self::held(leases, &updates),
        };
        let _: HeartbeatAnswer = self.post("/v1/leases/heartbeat", &request).await?;
        Ok(())
    }

    async fn report(&self, ended: Vec<Ended>) -> SourceResult<Vec<bool>> {
        let request = ReportRequest {
            worker: self.worker.clone(),
            ended: ended.iter().map(EndedDto::from_ended).collect(),
        };
        let answer: ReportAnswer = self.post("/v1/leases/report", &request).await?;
        Ok(answer
            .results
            .iter()
            .map(|r| r.status == "applied")
            .collect())
    }

    async fn module(&self, digest: ModuleDigest) -> SourceResult<Vec<u8>> {
        if self.modules.contains(&digest)
            && let Ok(bytes) = self.modules.get(&digest)
        {
            return Ok(bytes);
        }
        let path = format!("/v1/modules/{}", digest.to_hex());
        let response = self
            .client
            .request(Method::GET, &path)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .map_err(failed)?;
        match response.status() {
            status if status.is_success() => {}
            StatusCode::NOT_FOUND => return Err(SourceError::ModuleNotFound(digest)),
            status => return Err(failed(format!("{path}: HTTP {status}"))),
        }
        let bytes = response.bytes().await.map_err(failed)?.to_vec();
        let actual = ModuleDigest::of(&bytes);
        if actual != digest {
            return Err(SourceError::Failed(Box::new(CallError::WrongModule {
                digest,
                actual,
            })));
        }
        if let Err(e) = self.modules.put(&bytes) {
            tracing::warn!(error = %e, "cannot keep a module in the worker's cache");
        }
        Ok(bytes)
    }

    fn cancels(&self) -> Option<tokio::sync::broadcast::Receiver<Cancel>> {
        Some(self.cancels.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_event_names_its_job() {
        let id = JobId::generate();
        let event = format!("event: cancel\ndata: {{\"id\":\"{id}\"}}\n\n");
        assert_eq!(cancel_of(&event), Some(id));
        assert_eq!(cancel_of(": keep-alive\n\n"), None);
        assert_eq!(cancel_of("event: other\ndata: {}\n\n"), None);
    }
}
