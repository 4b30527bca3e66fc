//! Filling the database from another store (`store::copy`): every batch written in one
//! transaction, records as they were stored; the job counts and the fencing token sequence
//! are set from what was written before the commit.

use deadpool_postgres::GenericClient;
use tokio::sync::mpsc;

use super::rows::{self, AttemptColumns, id_bytes};
use super::{PgStore, catalog, db};
use crate::domain::{ModuleDigest, TaskRecord, TokenRecord};
use crate::store::columns;
use crate::store::copy::{Batch, Catalog, CopyReport, JobCopy};
use crate::store::{StoreError, StoreResult};

/// The tables a copy fills, in the order their holdings are named.
const TABLES: [&str; 6] = ["tasks", "modules", "queues", "schedules", "tokens", "jobs"];

impl PgStore {
    /// Writes the batches of a copy's source in one transaction, committed when the source
    /// sends [`Batch::Done`]. The database must hold nothing unless `replace`, which deletes
    /// what it holds first.
    pub async fn import(
        &self,
        replace: bool,
        mut batches: mpsc::Receiver<StoreResult<Batch>>,
    ) -> StoreResult<CopyReport> {
        let mut client = self.durable().await?;
        let tx = client.transaction().await.map_err(db)?;
        let holds = holdings(&tx).await?;
        if !holds.is_empty() && !replace {
            return Err(StoreError::NotEmpty {
                holds: holds.join(", "),
            });
        }
        if !holds.is_empty() {
            tx.batch_execute(
                "TRUNCATE tasks, task_versions, modules, queues, jobs, job_lookup, attempts, \
                 job_counts, tokens, schedules, guarded_keys",
            )
            .await
            .map_err(db)?;
        }
        let mut report = CopyReport::default();
        loop {
            match batches.recv().await {
                None => {
                    return Err(StoreError::Io {
                        what: "the source stopped before its end; nothing was written".into(),
                        source: std::sync::Arc::new(std::io::Error::from(
                            std::io::ErrorKind::UnexpectedEof,
                        )),
                    });
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(Batch::Done)) => break,
                Some(Ok(Batch::Catalog(c))) => write_catalog(&tx, &c, &mut report).await?,
                Some(Ok(Batch::Modules(m))) => write_modules(&tx, m, &mut report).await?,
                Some(Ok(Batch::Jobs(j))) => write_jobs(&tx, &j, &mut report).await?,
            }
        }
        tx.batch_execute(
            "INSERT INTO job_counts (queue, state, n) \
                 SELECT queue, state, count(*) FROM jobs GROUP BY queue, state; \
             SELECT setval('lease_tokens', greatest( \
                 (SELECT coalesce(max(lease), 1) FROM jobs), \
                 (SELECT last_value FROM lease_tokens)));",
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        client.batch_execute("ANALYZE").await.map_err(db)?;
        Ok(report)
    }
}

/// What the database holds of each table a copy fills: "3 tasks, 1 token".
async fn holdings(client: &impl GenericClient) -> StoreResult<Vec<String>> {
    let counts = TABLES
        .iter()
        .map(|t| format!("(SELECT count(*) FROM {t})"))
        .collect::<Vec<_>>()
        .join(", ");
    let row = client
        .query_one(&format!("SELECT {counts}"), &[])
        .await
        .map_err(db)?;
    Ok(TABLES
        .iter()
        .enumerate()
        .filter_map(|(i, table)| {
            let n: i64 = row.get(i);
            (n > 0).then(|| format!("{n} {table}"))
        })
        .collect())
}

async fn write_catalog(
    client: &impl GenericClient,
    c: &Catalog,
    report: &mut CopyReport,
) -> StoreResult<()> {
    for task in &c.tasks {
        write_task(client, task).await?;
        report.tasks += 1;
        report.task_versions += task.versions.len() as u64;
    }
    for (queue, paused) in &c.queues {
        catalog::put_queue(client, queue).await?;
        client
            .execute(
                "UPDATE queues SET paused = $2 WHERE name = $1",
                &[&queue.name.as_str(), paused],
            )
            .await
            .map_err(db)?;
        report.queues += 1;
    }
    for schedule in &c.schedules {
        catalog::put_schedule(client, schedule).await?;
        report.schedules += 1;
    }
    for token in &c.tokens {
        write_token(client, token).await?;
        report.tokens += 1;
    }
    Ok(())
}

/// A task and its versions, with their times as stored.
async fn write_task(client: &impl GenericClient, task: &TaskRecord) -> StoreResult<()> {
    client
        .execute(
            "INSERT INTO tasks (name, digest, defaults, updated_at) VALUES ($1, $2, $3, $4)",
            &[
                &task.name.as_str(),
                &task.digest.to_hex(),
                &rows::json(&task.defaults),
                &task.updated_at.0,
            ],
        )
        .await
        .map_err(db)?;
    for v in &task.versions {
        client
            .execute(
                "INSERT INTO task_versions (name, digest, size_bytes, created_at) \
                 VALUES ($1, $2, $3, $4)",
                &[
                    &task.name.as_str(),
                    &v.digest.to_hex(),
                    &(v.size_bytes as i64),
                    &v.created_at.0,
                ],
            )
            .await
            .map_err(db)?;
    }
    Ok(())
}

/// A token with its hash and revocation as stored.
async fn write_token(client: &impl GenericClient, t: &TokenRecord) -> StoreResult<()> {
    client
        .execute(
            "INSERT INTO tokens (id, name, role, hash, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &t.id,
                &t.name,
                &t.role.as_str(),
                &t.hash,
                &t.created_at.0,
                &t.revoked_at.map(|r| r.0),
            ],
        )
        .await
        .map_err(db)?;
    Ok(())
}

async fn write_modules(
    client: &impl GenericClient,
    modules: Vec<(ModuleDigest, Option<Vec<u8>>)>,
    report: &mut CopyReport,
) -> StoreResult<()> {
    for (digest, bytes) in modules {
        let Some(bytes) = bytes else {
            report.missing_modules.push(digest);
            continue;
        };
        client
            .execute(
                "INSERT INTO modules (digest, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&digest.to_hex(), &bytes],
            )
            .await
            .map_err(db)?;
        report.modules += 1;
        report.module_bytes += bytes.len() as u64;
    }
    Ok(())
}

/// Every column of a job, as stored, and its row of `job_lookup`.
const INSERT_JOBS: &str = "WITH stored AS (INSERT INTO jobs (id, task, digest, queue, state, \
    input, args, env, priority, run_at, unique_key, context, limits, retry, attempts, lease, \
    lease_expires, worker, cancel_requested, progress_done, progress_total, output, \
    error_reason, error_message, submitter, created_at, started_at, finished_at, \
    concurrency_key, attempt_base) \
    SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::text[], $5::text[], \
        $6::bytea[], $7::text[], $8::text[], $9::int4[], $10::int8[], $11::text[], \
        $12::text[], $13::text[], $14::text[], $15::int4[], $16::int8[], $17::int8[], \
        $18::text[], $19::bool[], $20::int8[], $21::int8[], $22::bytea[], $23::text[], \
        $24::text[], $25::text[], $26::int8[], $27::int8[], $28::int8[], $29::text[], \
        $30::int4[]) \
    RETURNING task, id, context) \
    INSERT INTO job_lookup (task, id, context) SELECT task, id, context FROM stored";

const INSERT_ATTEMPTS: &str = "INSERT INTO attempts (job_id, number, reason, trap_kind, \
    exit_code, message, stderr, stderr_truncated, receipt, worker, started_at, finished_at, \
    replay) \
    SELECT * FROM unnest($1::bytea[], $2::int4[], $3::text[], $4::text[], $5::int4[], \
        $6::text[], $7::bytea[], $8::bool[], $9::text[], $10::text[], $11::int8[], \
        $12::int8[], $13::bytea[])";

async fn write_jobs(
    client: &impl GenericClient,
    jobs: &[JobCopy],
    report: &mut CopyReport,
) -> StoreResult<()> {
    let col = |f: fn(&JobCopy) -> String| jobs.iter().map(f).collect::<Vec<String>>();
    let opt = |f: fn(&JobCopy) -> Option<String>| jobs.iter().map(f).collect::<Vec<_>>();
    let int = |f: fn(&JobCopy) -> Option<i64>| jobs.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<Vec<u8>> = jobs.iter().map(|c| id_bytes(c.job.id)).collect();
    let inputs: Vec<&[u8]> = jobs.iter().map(|c| c.job.input.as_slice()).collect();
    let outputs: Vec<Option<&[u8]>> = jobs.iter().map(|c| c.job.output.as_deref()).collect();
    let priorities: Vec<i32> = jobs.iter().map(|c| c.job.priority).collect();
    let attempts: Vec<i32> = jobs.iter().map(|c| c.job.attempts as i32).collect();
    let bases: Vec<i32> = jobs.iter().map(|c| c.job.attempt_base as i32).collect();
    let cancels: Vec<bool> = jobs.iter().map(|c| c.cancel_requested).collect();
    client
        .execute(
            INSERT_JOBS,
            &[
                &ids,
                &col(|c| c.job.task.to_string()),
                &col(|c| c.job.digest.to_hex()),
                &col(|c| c.job.queue.to_string()),
                &col(|c| c.job.state.as_str().to_owned()),
                &inputs,
                &col(|c| rows::json(&c.job.args)),
                &col(|c| rows::json(&c.job.env)),
                &priorities,
                &int(|c| Some(c.job.run_at.0)),
                &opt(|c| c.job.unique_key.clone()),
                &opt(|c| c.job.context.clone()),
                &col(|c| columns::limits_text(&c.job.limits)),
                &col(|c| columns::retry_text(&c.job.retry)),
                &attempts,
                &int(|c| c.lease.map(|l| l.token)),
                &int(|c| c.lease.map(|l| l.expires_at.0)),
                &opt(|c| c.job.worker.clone()),
                &cancels,
                &int(|c| c.job.progress.map(|p| p.0)),
                &int(|c| c.job.progress.map(|p| p.1)),
                &outputs,
                &opt(|c| c.job.error.as_ref().map(|e| e.reason.as_str().to_owned())),
                &opt(|c| c.job.error.as_ref().map(|e| e.message.clone())),
                &opt(|c| c.job.submitter.clone()),
                &int(|c| Some(c.job.created_at.0)),
                &int(|c| c.job.started_at.map(|t| t.0)),
                &int(|c| c.job.finished_at.map(|t| t.0)),
                &opt(|c| c.job.concurrency_key.clone()),
                &bases,
            ],
        )
        .await
        .map_err(db)?;
    for c in jobs {
        *report.jobs.entry(c.job.state).or_default() += 1;
    }
    write_attempts(client, jobs, report).await
}

async fn write_attempts(
    client: &impl GenericClient,
    jobs: &[JobCopy],
    report: &mut CopyReport,
) -> StoreResult<()> {
    let all: Vec<_> = jobs
        .iter()
        .flat_map(|c| c.attempts.iter().map(move |a| (c.job.id, a)))
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let columns = AttemptColumns::new(&all);
    client
        .execute(INSERT_ATTEMPTS, &columns.params())
        .await
        .map_err(db)?;
    report.attempts += all.len() as u64;
    Ok(())
}
