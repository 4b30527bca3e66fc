//! Which node leads the store's maintenance: the one holding a session advisory lock on a
//! connection of its own. A node that dies ends its session, the database releases the lock,
//! and the next node that asks takes it (each asks before every round, about once a second).
//! A node whose connection broke lets go: it leads again only if it takes the lock again.

use tokio_postgres::NoTls;

use super::db;
use crate::store::StoreResult;

/// The advisory lock key of leadership ("rtleader" in ASCII, cut to 63 bits).
const LEADER_LOCK: i64 = 0x7274_6c65_6164_6572;

/// This node's side of the election.
pub(super) struct Leadership {
    config: tokio_postgres::Config,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    client: Option<tokio_postgres::Client>,
    leading: bool,
}

impl Leadership {
    pub(super) fn new(config: tokio_postgres::Config) -> Self {
        Self {
            config,
            state: tokio::sync::Mutex::default(),
        }
    }

    /// Whether this node leads now: it holds the lock on a live connection, or just took it.
    pub(super) async fn lead(&self) -> StoreResult<bool> {
        let mut state = self.state.lock().await;
        if state
            .client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            state.leading = false;
            let (client, connection) = self.config.connect(NoTls).await.map_err(db)?;
            tokio::spawn(connection);
            state.client = Some(client);
        }
        if state.leading {
            return Ok(true);
        }
        let client = state.client.as_ref().expect("connected above");
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
            .await
            .map_err(db)?
            .get(0);
        state.leading = taken;
        Ok(taken)
    }
}
