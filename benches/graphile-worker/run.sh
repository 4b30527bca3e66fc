#!/usr/bin/env bash
# Reproducible graphile-worker benchmark against a throwaway PostgreSQL 15 cluster.
#
#   bash benches/graphile-worker/run.sh             # 3 runs x 50,000 jobs per mode
#   JOBS=5000 bash benches/graphile-worker/run.sh   # a quick smoke run
#
# Env overrides (passed through to bench.mjs): JOBS, RUNS, SUBMIT_BATCH, CONCURRENCY,
# MAX_POOL_SIZE, POLL_INTERVAL, LOCAL_QUEUE_SIZE, COMPLETE_BATCH_DELAY, FAIL_BATCH_DELAY.
# PGPORT_BENCH (default 55433; the next free port is used if taken), MODES (default
# "batched batched-overlap default"; a mode ending in -overlap starts the worker before the
# first job is added, as remotask's `cargo bench --bench postgres -- e2e` does).
#
# Runs as root; the cluster is created and run as the `postgres` OS user in a
# temporary directory, listens on 127.0.0.1 only, and is stopped and removed on exit.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PGBIN=/usr/lib/postgresql/15/bin
PORT="${PGPORT_BENCH:-55433}"
DB=gwbench
MODES="${MODES:-batched batched-overlap default}"

if [[ ! -x "$PGBIN/postgres" ]]; then
  echo "PostgreSQL 15 not found; installing Debian's postgresql package" >&2
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
  # The Debian package may start its own cluster; stop it so it does not share the machine.
  if command -v pg_ctlcluster >/dev/null; then pg_ctlcluster 15 main stop 2>/dev/null || true; fi
fi
if [[ ! -d "$HERE/node_modules/graphile-worker" ]]; then
  (cd "$HERE" && npm ci --no-audit --no-fund)
fi

# First free TCP port on 127.0.0.1 at or above $PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
while port_in_use "$PORT"; do PORT=$((PORT + 1)); done

TMP="$(mktemp -d /tmp/gw-bench-pg.XXXXXX)"
chown postgres:postgres "$TMP"
chmod 700 "$TMP"
PGDATA="$TMP/data"
LOG="$TMP/server.log"

as_pg() { runuser -u postgres -- "$@"; }

cleanup() {
  local rc=$?
  if [[ -f "$PGDATA/postmaster.pid" ]]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [[ $rc -ne 0 && -f "$LOG" ]]; then
    echo "---- last lines of the PostgreSQL log ----" >&2
    tail -n 30 "$LOG" >&2 || true
  fi
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== initdb in $PGDATA (as postgres)"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null

echo "== starting PostgreSQL on 127.0.0.1:$PORT"
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$LOG" -w -t 60 start -o "\
 -c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$TMP \
 -c fsync=on -c synchronous_commit=on -c full_page_writes=on" >/dev/null

PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
export DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/$DB"

echo "== server settings (read back via SQL)"
"${PSQL[@]}" -d "$DB" -P pager=off -c "
SELECT name, setting FROM pg_settings
 WHERE name IN ('server_version','fsync','synchronous_commit','full_page_writes',
                'wal_level','shared_buffers','max_wal_size','listen_addresses','port')
 ORDER BY array_position(ARRAY['server_version','fsync','synchronous_commit','full_page_writes',
                'wal_level','shared_buffers','max_wal_size','listen_addresses','port'], name::text)"

cd "$HERE"
for mode in $MODES; do
  echo
  echo "== node bench.mjs $mode"
  case "$mode" in
    *-overlap) OVERLAP=1 node bench.mjs "${mode%-overlap}" ;;
    *) OVERLAP=0 node bench.mjs "$mode" ;;
  esac
done

echo
echo "== server settings at the end (read back via SQL)"
"${PSQL[@]}" -d "$DB" -At -F ' = ' -c "
SELECT 'server_version', current_setting('server_version') UNION ALL
SELECT 'fsync', current_setting('fsync') UNION ALL
SELECT 'synchronous_commit', current_setting('synchronous_commit') UNION ALL
SELECT 'full_page_writes', current_setting('full_page_writes')"
echo "== done; stopping and removing the cluster"
