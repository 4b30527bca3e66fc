//! Parked claims: a claim an idle dispatcher leaves with the writer ([`Store::park_claim`]),
//! run inside the transaction of the next submit that queues a job in one of its queues, so
//! that job is running when its submit commits, without a claim and a commit of its own.
//!
//! The lock decides who owns a parked claim: the writer takes it out to run it (and then
//! always answers), or its caller takes it back before that.
//!
//! [`Store::park_claim`]: crate::store::Store::park_claim

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::SqliteStore;
use super::claims::{ClaimOf, RawClaim, claim_in};
use super::writer::{Completion, in_savepoint};
use crate::domain::QueueName;
use crate::store::{ParkedAnswer, StandingClaim, StoreResult};

impl SqliteStore {
    /// Parks `claim` ([`crate::store::Store::park_claim`]).
    pub(super) fn park(&self, claim: StandingClaim) -> (u64, ParkedAnswer) {
        let parking = self.inner.parking.clone();
        let ticket = parking.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = tokio::sync::oneshot::channel();
        parking.lock().push(Parked {
            ticket,
            claim,
            reply,
        });
        let unpark = Unpark { parking, ticket };
        let answer: ParkedAnswer = Box::pin(async move {
            let _unpark = unpark;
            match answer.await {
                Ok(taken) => taken?
                    .into_iter()
                    .map(|(queue, raw)| Ok((queue, raw.decode()?)))
                    .collect(),
                // Taken back, or the writer is gone: nothing ran.
                Err(_) => Ok(Vec::new()),
            }
        });
        (ticket, answer)
    }
}

/// The claims parked with the writer.
#[derive(Default)]
pub(super) struct Parking {
    next_ticket: AtomicU64,
    claims: Mutex<Vec<Parked>>,
}

pub(super) struct Parked {
    ticket: u64,
    claim: StandingClaim,
    reply: tokio::sync::oneshot::Sender<StoreResult<Vec<(QueueName, RawClaim)>>>,
}

impl Parking {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Parked>> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any claim is parked.
    pub(super) fn any(&self) -> bool {
        !self.lock().is_empty()
    }

    /// Takes out the claims on any of `queues`, dropping those whose caller is gone.
    pub(super) fn take_for(&self, queues: &[&str]) -> Vec<Parked> {
        let mut claims = self.lock();
        if claims.is_empty() {
            return Vec::new();
        }
        let (taken, kept): (Vec<_>, Vec<_>) = claims
            .drain(..)
            .filter(|p| !p.reply.is_closed())
            .partition(|p| p.claim.queues.iter().any(|q| queues.contains(&q.as_str())));
        *claims = kept;
        taken
    }

    /// Takes back a claim that has not run; false if the writer has it.
    pub(super) fn remove(&self, ticket: u64) -> bool {
        let mut claims = self.lock();
        match claims.iter().position(|p| p.ticket == ticket) {
            Some(i) => {
                claims.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

/// Takes a parked claim back when its answer is dropped unanswered.
pub(super) struct Unpark {
    parking: Arc<Parking>,
    ticket: u64,
}

impl Drop for Unpark {
    fn drop(&mut self) {
        self.parking.remove(self.ticket);
    }
}

/// Runs a parked claim inside the transaction of the submits that queued jobs in `queues`,
/// in a savepoint of its own; answers it once the transaction has ended.
pub(super) fn ride(conn: &Connection, parked: Parked, queues: &[&str]) -> Completion {
    let Parked { claim, reply, .. } = parked;
    let now = claim.clock.now();
    let result = in_savepoint(conn, |c| {
        let mut left = claim.max;
        let mut taken = Vec::new();
        for queue in &claim.queues {
            if left == 0 {
                break;
            }
            if !queues.contains(&queue.as_str()) {
                continue;
            }
            let raw = claim_in(
                c,
                ClaimOf {
                    queue,
                    worker: &claim.worker,
                    max: left,
                    lease_ttl_ms: claim.lease_ttl_ms,
                    now,
                },
            )?;
            left = left.saturating_sub(raw.rows.len() as u32);
            taken.push((queue.clone(), raw));
        }
        Ok(taken)
    });
    Box::new(move |committed: StoreResult<()>| {
        let _ = reply.send(committed.and(result));
    })
}
