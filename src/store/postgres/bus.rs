//! What the nodes on one database tell each other, through `LISTEN`/`NOTIFY` on the channel
//! `remotask`: no second service. A notification carries a batch of signals from one node
//! (its first line the node's id, so a node skips its own), one line each:
//!
//! ```text
//! 4f1c9a0e77d2b3a1
//! W                                     work may be waiting
//! R                                     attempts ended: room in queues
//! J <job id> <task> <queue> <state> <ms> a job entered a state
//! C <job id> <worker or ->              cancel a running job
//! Q                                     a queue's settings changed
//! S                                     a schedule changed
//! ```
//!
//! A node listens on a connection of its own, and opens it again (with backoff) when it
//! breaks; signals sent meanwhile are missed, so on reconnecting it acts as if queues had
//! changed, and every part reads the store again.

use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::GenericClient;
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{Inner, PgStore, db};
use crate::domain::{JobId, JobState, QueueName, TaskName, Timestamp};
use crate::store::{Signal, StoreResult};
use crate::telemetry::{Component, background_error};

const CHANNEL: &str = "remotask";
/// A notification's payload at most (PostgreSQL's limit is 8000 bytes).
const PAYLOAD_MAX: usize = 7_800;

fn line(signal: &Signal) -> String {
    match signal {
        Signal::Work => "W".to_owned(),
        Signal::Room => "R".to_owned(),
        Signal::QueuesChanged => "Q".to_owned(),
        Signal::SchedulesChanged => "S".to_owned(),
        Signal::Job {
            id,
            task,
            queue,
            state,
            at,
        } => format!("J {id} {task} {queue} {state} {}", at.0),
        Signal::Cancel { id, worker } => {
            format!("C {id} {}", worker.as_deref().unwrap_or("-"))
        }
    }
}

fn parse_line(line: &str) -> Option<Signal> {
    let mut parts = line.split(' ');
    Some(match parts.next()? {
        "W" => Signal::Work,
        "R" => Signal::Room,
        "Q" => Signal::QueuesChanged,
        "S" => Signal::SchedulesChanged,
        "J" => Signal::Job {
            id: parts.next()?.parse::<JobId>().ok()?,
            task: parts.next()?.parse::<TaskName>().ok()?,
            queue: parts.next()?.parse::<QueueName>().ok()?,
            state: parts.next()?.parse::<JobState>().ok()?,
            at: Timestamp(parts.next()?.parse().ok()?),
        },
        "C" => Signal::Cancel {
            id: parts.next()?.parse().ok()?,
            worker: parts.next().filter(|w| *w != "-").map(str::to_owned),
        },
        _ => return None,
    })
}

/// `signals` from `node`, cut into payloads that fit a notification.
fn payloads(node: u64, signals: &[Signal]) -> Vec<String> {
    let head = format!("{node:016x}");
    let mut out = Vec::new();
    let mut current = head.clone();
    for signal in signals {
        let line = line(signal);
        if current.len() + 1 + line.len() > PAYLOAD_MAX {
            out.push(std::mem::replace(&mut current, head.clone()));
        }
        current.push('\n');
        current.push_str(&line);
    }
    if current.len() > head.len() {
        out.push(current);
    }
    out
}

/// The signals of a payload, unless `node` sent it.
fn decode(node: u64, payload: &str) -> Vec<Signal> {
    let mut lines = payload.lines();
    let from = lines.next().and_then(|h| u64::from_str_radix(h, 16).ok());
    if from == Some(node) || from.is_none() {
        return Vec::new();
    }
    lines.filter_map(parse_line).collect()
}

impl PgStore {
    /// Sends `signals` to the other nodes, in as few notifications as fit.
    pub(super) async fn notify(&self, signals: &[Signal]) -> StoreResult<()> {
        let payloads = payloads(self.inner.node, signals);
        if payloads.is_empty() {
            return Ok(());
        }
        let client = self.volatile().await?;
        let statement = client
            .prepare_cached("SELECT pg_notify($1, p) FROM unnest($2::text[]) p")
            .await
            .map_err(db)?;
        client
            .query(&statement, &[&CHANNEL, &payloads])
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// Starts listening for the other nodes' signals, until the store is dropped.
pub(super) fn listen(store: &PgStore) {
    let inner = Arc::downgrade(&store.inner);
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(100);
        let mut first = true;
        loop {
            let Some(alive) = inner.upgrade() else { return };
            let config = alive.config.clone();
            drop(alive);
            match listen_once(&config, &inner, !first).await {
                Ok(()) => wait = Duration::from_millis(100),
                Err(e) => background_error(Component::Signals, "listening to the other nodes", &e),
            }
            first = false;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    });
}

/// One listening connection, until it breaks or the store is dropped.
async fn listen_once(
    config: &tokio_postgres::Config,
    inner: &Weak<Inner>,
    reconnected: bool,
) -> StoreResult<()> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(db)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n.payload().to_owned());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(db)?;
    if reconnected && let Some(alive) = inner.upgrade() {
        let _ = alive.signals.send(Signal::QueuesChanged);
    }
    while let Some(payload) = rx.recv().await {
        let Some(alive) = inner.upgrade() else { break };
        for signal in decode(alive.node, &payload) {
            let _ = alive.signals.send(signal);
        }
    }
    driver.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_travel_in_payloads_that_fit_and_a_node_skips_its_own() {
        let job = Signal::Job {
            id: JobId::generate(),
            task: "echo".parse().unwrap(),
            queue: QueueName::default_queue(),
            state: JobState::Completed,
            at: Timestamp(1_700_000_000_123),
        };
        let cancel = Signal::Cancel {
            id: JobId::generate(),
            worker: Some("w-1".into()),
        };
        let mut signals = vec![Signal::Work, cancel.clone(), Signal::SchedulesChanged];
        signals.extend(std::iter::repeat_n(job.clone(), 1000));
        let sent = payloads(7, &signals);
        assert!(sent.len() > 1 && sent.iter().all(|p| p.len() <= PAYLOAD_MAX));
        let heard: Vec<Signal> = sent.iter().flat_map(|p| decode(8, p)).collect();
        assert_eq!(heard, signals);
        assert!(sent.iter().all(|p| decode(7, p).is_empty()), "its own");
        let anonymous = Signal::Cancel {
            id: JobId::generate(),
            worker: None,
        };
        assert_eq!(
            decode(1, &payloads(2, std::slice::from_ref(&anonymous))[0]),
            [anonymous]
        );
    }
}
