//! [`Store`] for [`PgStore`]: each method takes a connection from the pool its durability
//! needs (see the module's docs) and runs one function of this module's siblings, in a
//! transaction when it takes several statements.

use deadpool_postgres::GenericClient;

use super::{PgStore, catalog, db, jobs, leases};
use crate::domain::{
    AttemptRecord, CancelOutcome, Job, JobFilter, JobId, Lease, ModuleDigest, NewJob, QueueConfig,
    QueueName, QueuePosition, QueueStats, ScheduleName, ScheduleRecord, SessionRecord,
    TaskDefaults, TaskName, TaskRecord, Timestamp, TokenRecord,
};
use crate::store::{
    AttemptEnd, Claimed, Claims, Firing, Inserted, Revoked, Signal, Store, StoreError, StoreResult,
};

#[async_trait::async_trait]
impl Store for PgStore {
    async fn put_task(
        &self,
        name: &TaskName,
        digest: ModuleDigest,
        size_bytes: u64,
        defaults: Option<TaskDefaults>,
        now: Timestamp,
    ) -> StoreResult<TaskRecord> {
        let mut client = self.durable().await?;
        let tx = client.transaction().await.map_err(db)?;
        catalog::put_task(&tx, name, digest, size_bytes, defaults.as_ref(), now).await?;
        let task = catalog::task(&tx, name.as_str()).await?;
        tx.commit().await.map_err(db)?;
        task.ok_or_else(|| super::corrupt("tasks", "task vanished after insert"))
    }

    async fn get_task(&self, name: &TaskName) -> StoreResult<Option<TaskRecord>> {
        catalog::task(&self.durable().await?, name.as_str()).await
    }

    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        let client = self.durable().await?;
        let names = client
            .query("SELECT name FROM tasks ORDER BY name", &[])
            .await
            .map_err(db)?;
        let mut out = Vec::with_capacity(names.len());
        for row in names {
            out.extend(catalog::task(&client, row.get(0)).await?);
        }
        Ok(out)
    }

    async fn set_task_defaults(
        &self,
        name: &TaskName,
        defaults: TaskDefaults,
        now: Timestamp,
    ) -> StoreResult<Option<TaskRecord>> {
        let client = self.durable().await?;
        let n = client
            .execute(
                "UPDATE tasks SET defaults = $2, updated_at = $3 WHERE name = $1",
                &[&name.as_str(), &super::rows::json(&defaults), &now.0],
            )
            .await
            .map_err(db)?;
        if n == 0 {
            return Ok(None);
        }
        catalog::task(&client, name.as_str()).await
    }

    async fn delete_task(&self, name: &TaskName) -> StoreResult<bool> {
        let mut client = self.durable().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.execute(
            "DELETE FROM task_versions WHERE name = $1",
            &[&name.as_str()],
        )
        .await
        .map_err(db)?;
        let n = tx
            .execute("DELETE FROM tasks WHERE name = $1", &[&name.as_str()])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(n > 0)
    }

    async fn put_module(&self, bytes: Vec<u8>) -> StoreResult<ModuleDigest> {
        let digest = ModuleDigest::of(&bytes);
        self.durable()
            .await?
            .execute(
                "INSERT INTO modules (digest, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&digest.to_hex(), &bytes],
            )
            .await
            .map_err(db)?;
        Ok(digest)
    }

    async fn get_module(&self, digest: ModuleDigest) -> StoreResult<Option<Vec<u8>>> {
        let row = self
            .durable()
            .await?
            .query_opt(
                "SELECT bytes FROM modules WHERE digest = $1",
                &[&digest.to_hex()],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let bytes: Vec<u8> = row.get(0);
        let actual = ModuleDigest::of(&bytes);
        if actual != digest {
            return Err(StoreError::Corrupt {
                table: "modules",
                message: format!("module {digest}'s bytes hash to {actual}"),
            });
        }
        Ok(Some(bytes))
    }

    async fn put_queue(&self, config: &QueueConfig) -> StoreResult<()> {
        catalog::put_queue(&self.durable().await?, config).await
    }

    async fn get_queue(&self, name: &QueueName) -> StoreResult<Option<QueueStats>> {
        let stats = catalog::queue_stats(&self.durable().await?, Some(name)).await?;
        Ok(stats.into_iter().next())
    }

    async fn list_queues(&self) -> StoreResult<Vec<QueueStats>> {
        catalog::queue_stats(&self.durable().await?, None).await
    }

    async fn queue_configs(&self) -> StoreResult<Vec<(QueueConfig, bool)>> {
        catalog::queue_configs(&self.durable().await?).await
    }

    async fn set_paused(&self, name: &QueueName, paused: bool) -> StoreResult<bool> {
        let n = self
            .durable()
            .await?
            .execute(
                "UPDATE queues SET paused = $2 WHERE name = $1",
                &[&name.as_str(), &paused],
            )
            .await
            .map_err(db)?;
        Ok(n > 0)
    }

    async fn insert_jobs(&self, new: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
        let mut client = self.durable().await?;
        let tx = client.transaction().await.map_err(db)?;
        let inserted = jobs::insert(&tx, &new).await?;
        tx.commit().await.map_err(db)?;
        Ok(inserted)
    }

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        jobs::get(&self.durable().await?, id).await
    }

    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>> {
        jobs::list(&self.durable().await?, filter).await
    }

    async fn attempts(&self, id: JobId) -> StoreResult<Vec<AttemptRecord>> {
        jobs::attempts(&self.durable().await?, id).await
    }

    async fn claim(
        &self,
        queue: &QueueName,
        worker: &str,
        max: u32,
        lease_ttl_ms: i64,
        now: Timestamp,
    ) -> StoreResult<Claims> {
        leases::claim(
            &self.volatile().await?,
            queue,
            worker,
            max,
            lease_ttl_ms,
            now,
        )
        .await
    }

    async fn heartbeat(
        &self,
        id: JobId,
        lease: &Lease,
        expires_at: Timestamp,
    ) -> StoreResult<bool> {
        leases::heartbeat(&self.volatile().await?, id, lease.token, expires_at).await
    }

    async fn set_progress(
        &self,
        id: JobId,
        lease: &Lease,
        done: i64,
        total: i64,
    ) -> StoreResult<bool> {
        leases::set_progress(&self.volatile().await?, id, lease.token, done, total).await
    }

    async fn finish_many(&self, ends: Vec<AttemptEnd>, now: Timestamp) -> StoreResult<Vec<bool>> {
        if ends.is_empty() {
            return Ok(Vec::new());
        }
        leases::finish(&self.volatile().await?, &ends, now).await
    }

    async fn expired_leases(&self, now: Timestamp) -> StoreResult<Vec<Claimed>> {
        leases::expired_leases(&self.durable().await?, now).await
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> StoreResult<CancelOutcome> {
        let mut client = self.durable().await?;
        let tx = client.transaction().await.map_err(db)?;
        let outcome = jobs::cancel(&tx, id, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(outcome)
    }

    async fn cancel_requested(&self, id: JobId) -> StoreResult<bool> {
        let row = self
            .durable()
            .await?
            .query_opt(
                "SELECT cancel_requested FROM jobs WHERE id = $1 AND state = 'running'",
                &[&super::rows::id_bytes(id)],
            )
            .await
            .map_err(db)?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    async fn release(&self, id: JobId, now: Timestamp) -> StoreResult<bool> {
        jobs::release(&self.durable().await?, id, now).await
    }

    async fn retry(&self, id: JobId, now: Timestamp) -> StoreResult<bool> {
        jobs::retry(&self.durable().await?, id, now).await
    }

    async fn delete_job(&self, id: JobId) -> StoreResult<bool> {
        jobs::delete(&self.durable().await?, id).await
    }

    async fn clean(&self, before: Option<Timestamp>) -> StoreResult<u64> {
        jobs::clean(&self.durable().await?, before).await
    }

    async fn position(&self, id: JobId) -> StoreResult<Option<QueuePosition>> {
        jobs::position(&self.durable().await?, id).await
    }

    async fn live_contexts(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> StoreResult<Vec<(String, u64)>> {
        jobs::live_contexts(&self.durable().await?, after.as_deref(), limit).await
    }

    async fn ended_per_minute(&self, since: Timestamp) -> StoreResult<Vec<(i64, u64, u64)>> {
        jobs::ended_per_minute(&self.durable().await?, since).await
    }

    async fn next_scheduled(&self) -> StoreResult<Option<Timestamp>> {
        let client = self.durable().await?;
        let statement = client
            .prepare_cached("SELECT min(run_at) FROM jobs WHERE state = 'scheduled'")
            .await
            .map_err(db)?;
        let row = client.query_one(&statement, &[]).await.map_err(db)?;
        Ok(row.get::<_, Option<i64>>(0).map(Timestamp))
    }

    async fn put_schedule(&self, schedule: &ScheduleRecord) -> StoreResult<()> {
        catalog::put_schedule(&self.durable().await?, schedule).await
    }

    async fn get_schedule(&self, name: &ScheduleName) -> StoreResult<Option<ScheduleRecord>> {
        let client = self.durable().await?;
        let found = catalog::schedules(&client, "WHERE name = $1", &[&name.as_str()]).await?;
        Ok(found.into_iter().next())
    }

    async fn list_schedules(&self) -> StoreResult<Vec<ScheduleRecord>> {
        catalog::schedules(&self.durable().await?, "ORDER BY name", &[]).await
    }

    async fn delete_schedule(&self, name: &ScheduleName) -> StoreResult<bool> {
        let n = self
            .durable()
            .await?
            .execute("DELETE FROM schedules WHERE name = $1", &[&name.as_str()])
            .await
            .map_err(db)?;
        Ok(n > 0)
    }

    async fn due_schedules(&self, now: Timestamp) -> StoreResult<Vec<ScheduleRecord>> {
        let due = "WHERE NOT paused AND next_fire IS NOT NULL AND next_fire <= $1 \
                   ORDER BY next_fire";
        catalog::schedules(&self.durable().await?, due, &[&now.0]).await
    }

    async fn next_schedule_fire(&self) -> StoreResult<Option<Timestamp>> {
        let row = self
            .durable()
            .await?
            .query_one(
                "SELECT min(next_fire) FROM schedules WHERE NOT paused AND next_fire IS NOT NULL",
                &[],
            )
            .await
            .map_err(db)?;
        Ok(row.get::<_, Option<i64>>(0).map(Timestamp))
    }

    async fn fire_schedule(
        &self,
        name: &ScheduleName,
        firing: Firing,
        now: Timestamp,
    ) -> StoreResult<Option<Vec<Inserted>>> {
        let mut client = self.durable().await?;
        let tx = client.transaction().await.map_err(db)?;
        let moved = catalog::fire_schedule(
            &tx,
            name,
            firing.expected,
            firing.next,
            firing.fired_at,
            firing.jobs.len() as i64,
            firing.skipped,
            firing.error.as_deref(),
            now,
        )
        .await?;
        if !moved {
            return Ok(None);
        }
        let inserted = jobs::insert(&tx, &firing.jobs).await?;
        if let Some(last) = inserted.last() {
            tx.execute(
                "UPDATE schedules SET last_job = $2 WHERE name = $1",
                &[&name.as_str(), &super::rows::id_bytes(last.id())],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(Some(inserted))
    }

    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()> {
        self.durable()
            .await?
            .execute(
                "INSERT INTO tokens (id, name, role, hash, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[
                    &token.id,
                    &token.name,
                    &token.role.as_str(),
                    &token.hash,
                    &token.created_at.0,
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        catalog::tokens(&self.durable().await?).await
    }

    async fn revoke_token(&self, id: &str, now: Timestamp) -> StoreResult<Revoked> {
        let mut client = self.durable().await?;
        let tx = client.transaction().await.map_err(db)?;
        let revoked = catalog::revoke_token(&tx, id, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(revoked)
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        catalog::token_by_hash(&self.durable().await?, hash).await
    }

    async fn start_session(&self, session: &SessionRecord, now: Timestamp) -> StoreResult<()> {
        catalog::start_session(&self.durable().await?, session, now).await
    }

    async fn session(&self, hash: &str, now: Timestamp) -> StoreResult<Option<SessionRecord>> {
        catalog::session(&self.durable().await?, hash, now).await
    }

    async fn end_session(&self, hash: &str) -> StoreResult<bool> {
        catalog::end_session(&self.durable().await?, hash).await
    }

    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<Signal>> {
        Some(self.inner.signals.subscribe())
    }

    async fn signal(&self, signals: Vec<Signal>) -> StoreResult<()> {
        self.notify(&signals).await
    }

    async fn lead(&self) -> StoreResult<bool> {
        self.inner.leader.lead().await
    }
}
