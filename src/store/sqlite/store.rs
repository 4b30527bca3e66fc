//! [`Store`] for [`SqliteStore`]: each method is a read (on the caller's thread for a point
//! read, on the blocking pool for a scan) or a write through the writer thread, durable or
//! not, that runs one function of this module's siblings. What each does is written there.

use super::rows::{EncodedEnd, EncodedJob};
use super::schedules::FireWrite;
use super::{SqliteStore, catalog, claims, ends, jobs, schedules};
use crate::domain::{
    AttemptRecord, CancelOutcome, Job, JobFilter, JobId, Lease, ModuleDigest, NewJob, QueueConfig,
    QueueName, QueuePosition, QueueStats, ScheduleName, ScheduleRecord, SessionRecord,
    TaskDefaults, TaskName, TaskRecord, Timestamp, TokenRecord,
};
use crate::store::{
    AttemptEnd, BlobError, Claimed, Claims, Firing, Inserted, ParkedAnswer, Revoked, StandingClaim,
    Store, StoreError, StoreResult,
};

/// A module blob's failure as the store's.
fn blob_error(e: BlobError) -> StoreError {
    match e {
        BlobError::Corrupted { .. } => StoreError::Corrupt {
            table: "modules",
            message: e.to_string(),
        },
        other => StoreError::io("the module store failed", other),
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn free_bytes(&self) -> Option<u64> {
        let dir = self.inner.path.parent()?;
        let stat = rustix::fs::statvfs(dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    async fn put_task(
        &self,
        name: &TaskName,
        digest: ModuleDigest,
        size_bytes: u64,
        defaults: Option<TaskDefaults>,
        now: Timestamp,
    ) -> StoreResult<TaskRecord> {
        let name = name.clone();
        self.write(move |conn| catalog::put_task(conn, &name, digest, size_bytes, defaults, now))
            .await
    }

    async fn get_task(&self, name: &TaskName) -> StoreResult<Option<TaskRecord>> {
        self.read_point(|conn| catalog::load_task(conn, name.as_str()))
    }

    async fn list_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
        self.read(catalog::list_tasks).await
    }

    async fn set_task_defaults(
        &self,
        name: &TaskName,
        defaults: TaskDefaults,
        now: Timestamp,
    ) -> StoreResult<Option<TaskRecord>> {
        let name = name.clone();
        self.write(move |conn| catalog::set_task_defaults(conn, &name, &defaults, now))
            .await
    }

    async fn delete_task(&self, name: &TaskName) -> StoreResult<bool> {
        let name = name.clone();
        self.write(move |conn| catalog::delete_task(conn, &name))
            .await
    }

    async fn put_module(&self, bytes: Vec<u8>) -> StoreResult<ModuleDigest> {
        let blobs = self.inner.blobs.clone();
        tokio::task::spawn_blocking(move || blobs.put(&bytes))
            .await
            .map_err(|e| StoreError::io("storing a module did not finish", e))?
            .map_err(blob_error)
    }

    async fn get_module(&self, digest: ModuleDigest) -> StoreResult<Option<Vec<u8>>> {
        let blobs = self.inner.blobs.clone();
        if !blobs.contains(&digest) {
            return Ok(None);
        }
        tokio::task::spawn_blocking(move || blobs.get(&digest))
            .await
            .map_err(|e| StoreError::io("reading a module did not finish", e))?
            .map(Some)
            .map_err(blob_error)
    }

    async fn put_queue(&self, config: &QueueConfig) -> StoreResult<()> {
        let config = config.clone();
        self.write(move |conn| catalog::put_queue(conn, &config))
            .await
    }

    async fn get_queue(&self, name: &QueueName) -> StoreResult<Option<QueueStats>> {
        let name = name.clone();
        self.read(move |conn| catalog::load_queue(conn, name.as_str()))
            .await
    }

    async fn list_queues(&self) -> StoreResult<Vec<QueueStats>> {
        self.read(catalog::list_queues).await
    }

    async fn queue_configs(&self) -> StoreResult<Vec<(QueueConfig, bool)>> {
        self.read_point(catalog::queue_configs)
    }

    async fn set_paused(&self, name: &QueueName, paused: bool) -> StoreResult<bool> {
        let name = name.clone();
        self.write(move |conn| catalog::set_paused(conn, &name, paused))
            .await
    }

    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<Inserted>> {
        let jobs: Vec<EncodedJob> = jobs.into_iter().map(EncodedJob::new).collect();
        self.insert(jobs).await
    }

    async fn get_job(&self, id: JobId) -> StoreResult<Option<Job>> {
        self.read_point(|conn| jobs::get(conn, id))
    }

    async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>> {
        let filter = filter.clone();
        self.read(move |conn| jobs::list(conn, &filter)).await
    }

    async fn attempts(&self, id: JobId) -> StoreResult<Vec<AttemptRecord>> {
        self.read_point(|conn| ends::attempts(conn, id))
    }

    async fn claim(
        &self,
        queue: &QueueName,
        worker: &str,
        max: u32,
        lease_ttl_ms: i64,
        now: Timestamp,
    ) -> StoreResult<Claims> {
        let queue = queue.clone();
        let worker = worker.to_owned();
        let raw = self
            .write_volatile(move |conn| {
                let claim = claims::ClaimOf {
                    queue: &queue,
                    worker: &worker,
                    max,
                    lease_ttl_ms,
                    now,
                };
                claims::claim_in(conn, claim)
            })
            .await?;
        raw.decode()
    }

    fn park_claim(&self, claim: StandingClaim) -> Option<(u64, ParkedAnswer)> {
        Some(self.park(claim))
    }

    fn unpark_claim(&self, ticket: u64) -> bool {
        self.inner.parking.remove(ticket)
    }

    async fn heartbeat(
        &self,
        id: JobId,
        lease: &Lease,
        expires_at: Timestamp,
    ) -> StoreResult<bool> {
        let token = lease.token;
        self.write_volatile(move |conn| jobs::heartbeat(conn, id, token, expires_at))
            .await
    }

    async fn set_progress(
        &self,
        id: JobId,
        lease: &Lease,
        done: i64,
        total: i64,
    ) -> StoreResult<bool> {
        let token = lease.token;
        self.write_volatile(move |conn| jobs::set_progress(conn, id, token, done, total))
            .await
    }

    async fn finish_many(&self, ends: Vec<AttemptEnd>, now: Timestamp) -> StoreResult<Vec<bool>> {
        let ends: Vec<EncodedEnd> = ends.into_iter().map(EncodedEnd::new).collect();
        self.write_volatile(move |conn| ends::finish_all(conn, &ends, now))
            .await
    }

    async fn expired_leases(&self, now: Timestamp) -> StoreResult<Vec<Claimed>> {
        self.read(move |conn| jobs::expired_leases(conn, now)).await
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> StoreResult<CancelOutcome> {
        self.write(move |conn| jobs::cancel(conn, id, now)).await
    }

    async fn cancel_requested(&self, id: JobId) -> StoreResult<bool> {
        self.read_point(|conn| jobs::cancel_requested(conn, id))
    }

    async fn release(&self, id: JobId, now: Timestamp) -> StoreResult<bool> {
        self.write(move |conn| jobs::release(conn, id, now)).await
    }

    async fn retry(&self, id: JobId, now: Timestamp) -> StoreResult<bool> {
        self.write(move |conn| jobs::retry(conn, id, now)).await
    }

    async fn delete_job(&self, id: JobId) -> StoreResult<bool> {
        self.write(move |conn| jobs::delete(conn, id)).await
    }

    async fn clean(&self, before: Option<Timestamp>) -> StoreResult<u64> {
        self.write(move |conn| jobs::clean(conn, before)).await
    }

    async fn position(&self, id: JobId) -> StoreResult<Option<QueuePosition>> {
        self.read(move |conn| jobs::position(conn, id)).await
    }

    async fn live_contexts(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> StoreResult<Vec<(String, u64)>> {
        self.read(move |conn| jobs::live_contexts(conn, after.as_deref(), limit))
            .await
    }

    async fn ended_per_minute(&self, since: Timestamp) -> StoreResult<Vec<(i64, u64, u64)>> {
        self.read(move |conn| jobs::ended_per_minute(conn, since))
            .await
    }

    async fn next_scheduled(&self) -> StoreResult<Option<Timestamp>> {
        self.read_point(jobs::next_scheduled)
    }

    async fn put_schedule(&self, schedule: &ScheduleRecord) -> StoreResult<()> {
        let schedule = schedule.clone();
        self.write(move |conn| schedules::put(conn, &schedule))
            .await
    }

    async fn get_schedule(&self, name: &ScheduleName) -> StoreResult<Option<ScheduleRecord>> {
        let name = name.clone();
        self.read(move |conn| {
            let found = schedules::select(conn, "WHERE name = ?1", &[&name.as_str()])?;
            Ok(found.into_iter().next())
        })
        .await
    }

    async fn list_schedules(&self) -> StoreResult<Vec<ScheduleRecord>> {
        self.read(|conn| schedules::select(conn, "ORDER BY name", &[]))
            .await
    }

    async fn delete_schedule(&self, name: &ScheduleName) -> StoreResult<bool> {
        let name = name.clone();
        self.write(move |conn| schedules::delete(conn, &name)).await
    }

    async fn due_schedules(&self, now: Timestamp) -> StoreResult<Vec<ScheduleRecord>> {
        self.read(move |conn| {
            let due = "WHERE paused = 0 AND next_fire IS NOT NULL AND next_fire <= ?1 \
                       ORDER BY next_fire";
            schedules::select(conn, due, &[&now.0])
        })
        .await
    }

    async fn next_schedule_fire(&self) -> StoreResult<Option<Timestamp>> {
        self.read(schedules::next_fire).await
    }

    async fn fire_schedule(
        &self,
        name: &ScheduleName,
        firing: Firing,
        now: Timestamp,
    ) -> StoreResult<Option<Vec<Inserted>>> {
        let name = name.clone();
        let firing = FireWrite {
            expected: firing.expected,
            next: firing.next,
            fired_at: firing.fired_at,
            skipped: firing.skipped,
            error: firing.error,
            jobs: firing.jobs.into_iter().map(EncodedJob::new).collect(),
        };
        self.write(move |conn| schedules::fire(conn, &name, &firing, now))
            .await
    }

    async fn create_token(&self, token: &TokenRecord) -> StoreResult<()> {
        let token = token.clone();
        self.write(move |conn| catalog::create_token(conn, &token))
            .await
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        self.read(catalog::list_tokens).await
    }

    async fn revoke_token(&self, id: &str, now: Timestamp) -> StoreResult<Revoked> {
        let id = id.to_owned();
        self.write(move |conn| catalog::revoke_token(conn, &id, now))
            .await
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenRecord>> {
        // Every authenticated request asks: a cached statement, on the calling thread.
        self.read_point(|conn| catalog::token_by_hash(conn, hash))
    }

    async fn start_session(&self, session: &SessionRecord, now: Timestamp) -> StoreResult<()> {
        let session = session.clone();
        self.write(move |conn| catalog::start_session(conn, &session, now))
            .await
    }

    async fn session(&self, hash: &str, now: Timestamp) -> StoreResult<Option<SessionRecord>> {
        // Every console request asks, as for tokens.
        self.read_point(|conn| catalog::session(conn, hash, now))
    }

    async fn end_session(&self, hash: &str) -> StoreResult<bool> {
        let hash = hash.to_owned();
        self.write(move |conn| catalog::end_session(conn, &hash))
            .await
    }
}
