//! The nodes of one store hear each other: what happens on this node that others must know
//! (work arrived, attempts ended, a job changed state, a cancel, a queue or schedule changed)
//! leaves through an outbox that sends it to the store in batches, and what other nodes sent
//! comes in and is acted on here as if it had happened on this node, without being sent on
//! again. A store that only one process uses has no signals, and none of this runs.
//!
//! What this does not do: guarantee delivery. A node that misses a signal catches up on its
//! own: claims wait at most a second, `wait` reads the job again every 250 ms, cached queue
//! settings are read again every second, the scheduler looks every second.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::{JobEvent, Shared};
use crate::store::{Signal, Store};
use crate::telemetry::{Component, background_error};
use crate::worker::Cancel;

/// Signals sent to the store at most in one call.
const BATCH: usize = 4096;

/// Starts the outbox and the listener for `store`'s signals, if it has any and a runtime is
/// running; the outbox's sender.
pub(super) fn start(
    store: &Arc<dyn Store>,
    shared: std::sync::Weak<Shared>,
) -> Option<UnboundedSender<Signal>> {
    let incoming = store.signals()?;
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    runtime.spawn(outbox(store.clone(), rx));
    runtime.spawn(listen(incoming, shared));
    Some(tx)
}

/// Sends what is waiting in one call: wake-ups once each, job changes and cancels all.
async fn outbox(store: Arc<dyn Store>, mut rx: UnboundedReceiver<Signal>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        let mut seen = HashSet::new();
        batch.retain(|s| match s {
            Signal::Job { .. } | Signal::Cancel { .. } => true,
            other => seen.insert(std::mem::discriminant(other)),
        });
        if let Err(e) = store.signal(batch).await {
            background_error(Component::Signals, "telling the other nodes", &e);
        }
    }
}

/// Acts on what other nodes signal, until the store stops or this service is gone.
async fn listen(
    mut incoming: tokio::sync::broadcast::Receiver<Signal>,
    shared: std::sync::Weak<Shared>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let signal = match incoming.recv().await {
            Ok(s) => s,
            // Missed signals: wake everything once; each part reads the store again.
            Err(RecvError::Lagged(_)) => Signal::QueuesChanged,
            Err(RecvError::Closed) => return,
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        heard(&shared, signal);
    }
}

/// Does here what another node's signal asks for.
fn heard(shared: &Shared, signal: Signal) {
    match signal {
        Signal::Work => shared.woken_for_work(),
        Signal::Room => shared.woken_for_room(),
        Signal::Job {
            id,
            task,
            queue,
            state,
            at,
        } => {
            let _ = shared.events.send(JobEvent {
                id,
                task,
                queue,
                state,
                at,
            });
        }
        Signal::Cancel { id, worker } => {
            let _ = shared.cancels.send(Cancel { id, worker });
        }
        Signal::QueuesChanged => {
            shared
                .queues_changed
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            shared.woken_for_work();
            shared.woken_for_room();
            shared.schedules.notify_waiters();
        }
        Signal::SchedulesChanged => shared.schedules.notify_waiters(),
    }
}
