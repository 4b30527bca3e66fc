// graphile-worker throughput benchmark: no-op task, bulk submit, then drain.
//
// Usage:  node bench.mjs <batched|default> [DATABASE_URL]
// Env:    DATABASE_URL   (if not given as 2nd argument)
//         JOBS=50000      jobs per run
//         RUNS=3          runs per mode (medians are printed)
//         SUBMIT_BATCH=1000  jobs per addJobs() call (graphile_worker.add_jobs)
//         CONCURRENCY=24  concurrentJobs of the single worker instance
//         MAX_POOL_SIZE=25  worker's pg pool size (docs: concurrentJobs + 1 or 2)
//         POLL_INTERVAL=100  ms (default in graphile-worker is 2000)
//         LOCAL_QUEUE_SIZE=500, COMPLETE_BATCH_DELAY=0, FAIL_BATCH_DELAY=0 (batched mode)
//
// Per run: TRUNCATE the jobs table (+ CHECKPOINT), add JOBS jobs with addJobs()
// in batches (timed = submit), then start ONE worker with run() and time until
// every job is done (timed = run-only).  "Done" = the task function has been
// called JOBS times AND graphile_worker's jobs table is empty (i.e. all
// completions are committed; with batched completion the DB write lags the
// task return).  End-to-end = first addJobs() call -> jobs table empty.

import { performance } from "node:perf_hooks";
import { createRequire } from "node:module";
import pg from "pg";
import { run, makeWorkerUtils, Logger } from "graphile-worker";

const require = createRequire(import.meta.url);
const GW_VERSION = require("graphile-worker/package.json").version;

const mode = process.argv[2];
if (mode !== "batched" && mode !== "default") {
  console.error("usage: node bench.mjs <batched|default> [DATABASE_URL]");
  process.exit(2);
}
const connectionString = process.argv[3] || process.env.DATABASE_URL;
if (!connectionString) {
  console.error("DATABASE_URL not set (env or 2nd argument)");
  process.exit(2);
}

const int = (name, def) => {
  const v = process.env[name];
  if (v === undefined || v === "") return def;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new Error(`${name} must be an integer, got ${v}`);
  return n;
};
const JOBS = int("JOBS", 50_000);
const RUNS = int("RUNS", 3);
const SUBMIT_BATCH = int("SUBMIT_BATCH", 1_000);
const CONCURRENCY = int("CONCURRENCY", 24);
const MAX_POOL_SIZE = int("MAX_POOL_SIZE", 25);
const POLL_INTERVAL = int("POLL_INTERVAL", 100);
const LOCAL_QUEUE_SIZE = int("LOCAL_QUEUE_SIZE", 500);
const COMPLETE_BATCH_DELAY = int("COMPLETE_BATCH_DELAY", 0);
const FAIL_BATCH_DELAY = int("FAIL_BATCH_DELAY", 0);
// OVERLAP=1: the worker is running before the first job is added (submit and run overlap, and
// end-to-end is first addJobs() -> table empty); otherwise the worker starts once all are added.
const OVERLAP = process.env.OVERLAP === "1";
const TASK = "noop";
const SCHEMA = "graphile_worker";

// Only warnings and errors from graphile-worker (its info logs are per-start chatter).
const logger = new Logger((scope) => (level, message, meta) => {
  if (level === "error" || level === "warning") {
    console.error(`[gw ${level}]${scope.label ? ` ${scope.label}` : ""} ${message}`);
  }
});

// Options common to both modes: identical concurrency / pool / poll interval.
const commonOptions = {
  connectionString,
  concurrency: CONCURRENCY,
  maxPoolSize: MAX_POOL_SIZE,
  pollInterval: POLL_INTERVAL,
  noHandleSignals: true,
  logger,
};
// The batching options exist only as preset options in 0.16+/0.17.x
// (GraphileConfig.WorkerOptions in dist/index.d.ts; read in dist/main.js);
// the legacy flat run() options do not map them (dist/lib.js).
const modePreset =
  mode === "batched"
    ? {
        worker: {
          localQueue: { size: LOCAL_QUEUE_SIZE },
          completeJobBatchDelay: COMPLETE_BATCH_DELAY,
          failJobBatchDelay: FAIL_BATCH_DELAY,
        },
      }
    : null;
const runOptions = modePreset ? { ...commonOptions, preset: modePreset } : commonOptions;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (x) => x.toFixed(0).padStart(8);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function oneRun(i, admin, utils) {
  // --- reset state -------------------------------------------------------
  await admin.query(`TRUNCATE ${SCHEMA}._private_jobs`);
  await admin.query(`DELETE FROM ${SCHEMA}._private_job_queues`);
  try {
    await admin.query("CHECKPOINT"); // start each run from a clean WAL state (needs superuser)
  } catch (e) {
    if (i === 0) console.error(`(CHECKPOINT skipped: ${e.message})`);
  }
  await admin.query(`VACUUM ANALYZE ${SCHEMA}._private_jobs`);

  // --- run ---------------------------------------------------------------
  let done = 0;
  let tFirstStart = 0;
  let tAllReturned = 0;
  let resolveAll;
  const allReturned = new Promise((r) => (resolveAll = r));
  const taskList = {
    [TASK]: async () => {
      if (done === 0) tFirstStart = performance.now();
      if (++done === JOBS) {
        tAllReturned = performance.now();
        resolveAll();
      }
    },
  };
  let tRunStart = 0;
  let runner;
  const startWorker = async () => {
    tRunStart = performance.now();
    runner = await run({ ...runOptions, taskList }, undefined, []);
  };
  if (OVERLAP) await startWorker();

  // --- submit ------------------------------------------------------------
  const specs = [];
  for (let b = 0; b < JOBS; b += SUBMIT_BATCH) {
    const n = Math.min(SUBMIT_BATCH, JOBS - b);
    specs.push(Array.from({ length: n }, () => ({ identifier: TASK, payload: {} })));
  }
  const t0 = performance.now();
  for (const batch of specs) {
    await utils.addJobs(batch);
  }
  const tSubmitted = performance.now();
  if (!OVERLAP) {
    const queued = Number(
      (await admin.query(`SELECT count(*) AS n FROM ${SCHEMA}._private_jobs`)).rows[0].n,
    );
    if (queued !== JOBS) throw new Error(`expected ${JOBS} queued jobs, found ${queued}`);
    await startWorker();
  }

  let failed = 0;
  runner.events.on("job:failed", () => failed++);
  await allReturned;
  // Wait until the completions are committed (jobs table empty).
  let left;
  for (;;) {
    left = Number(
      (await admin.query(`SELECT count(*) AS n FROM ${SCHEMA}._private_jobs`)).rows[0].n,
    );
    if (left === 0) break;
    await sleep(2);
  }
  const tEnd = performance.now();
  await runner.stop();
  await runner.promise.catch(() => {});
  if (failed) throw new Error(`${failed} job(s) failed`);

  const submitS = (tSubmitted - t0) / 1000;
  const runS = (tEnd - tRunStart) / 1000;
  const e2eS = (tEnd - t0) / 1000;
  const r = {
    submit_jobs_per_s: JOBS / submitS,
    run_only_jobs_per_s: JOBS / runS,
    end_to_end_jobs_per_s: JOBS / e2eS,
    submit_s: submitS,
    run_s: runS,
    end_to_end_s: e2eS,
    worker_start_to_first_job_ms: tFirstStart - tRunStart,
    last_return_to_table_empty_ms: tEnd - tAllReturned,
  };
  console.log(
    `run ${i + 1}/${RUNS}: submit ${fmt(r.submit_jobs_per_s)} jobs/s (${submitS.toFixed(3)} s) | ` +
      `run-only ${fmt(r.run_only_jobs_per_s)} jobs/s (${runS.toFixed(3)} s) | ` +
      `end-to-end ${fmt(r.end_to_end_jobs_per_s)} jobs/s (${e2eS.toFixed(3)} s) | ` +
      `first job after ${r.worker_start_to_first_job_ms.toFixed(0)} ms, ` +
      `commit lag after last task ${r.last_return_to_table_empty_ms.toFixed(0)} ms`,
  );
  return r;
}

async function main() {
  const admin = new pg.Client({ connectionString });
  await admin.connect();
  const utils = await makeWorkerUtils({ connectionString, logger });
  try {
    await utils.migrate(); // graphile-worker's migrations (idempotent)
    const { rows } = await admin.query(
      `SELECT current_setting('server_version') AS v, current_setting('fsync') AS fsync,
              current_setting('synchronous_commit') AS sc, current_setting('full_page_writes') AS fpw`,
    );
    console.log(
      `graphile-worker ${GW_VERSION} | node ${process.version} | PostgreSQL ${rows[0].v} ` +
        `(fsync=${rows[0].fsync}, synchronous_commit=${rows[0].sc}, full_page_writes=${rows[0].fpw})`,
    );
    console.log(
      `mode=${mode}${OVERLAP ? " overlap" : ""} jobs=${JOBS} runs=${RUNS} submit_batch=${SUBMIT_BATCH} ` +
        `options=${JSON.stringify({ ...runOptions, connectionString: undefined, logger: undefined })}`,
    );

    const results = [];
    for (let i = 0; i < RUNS; i++) results.push(await oneRun(i, admin, utils));

    const med = {};
    for (const k of Object.keys(results[0])) med[k] = median(results.map((r) => r[k]));
    console.log(
      `MEDIAN (${mode}, ${RUNS} runs x ${JOBS} jobs): ` +
        `submit ${med.submit_jobs_per_s.toFixed(0)} jobs/s | ` +
        `run-only ${med.run_only_jobs_per_s.toFixed(0)} jobs/s | ` +
        `end-to-end ${med.end_to_end_jobs_per_s.toFixed(0)} jobs/s`,
    );
    console.log(
      "RESULT_JSON " +
        JSON.stringify({
          system: "graphile-worker",
          version: GW_VERSION,
          mode,
          jobs: JOBS,
          runs: RUNS,
          submit_batch: SUBMIT_BATCH,
          concurrency: CONCURRENCY,
          median: med,
          runs_detail: results,
        }),
    );
  } finally {
    await utils.release();
    await admin.end();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
