#!/usr/bin/env bash
# Runs a command with the servers the tests need, started on loopback and stopped afterwards:
#   - PostgreSQL (Debian's package; installed when missing and we are root)
#   - Chromium (Debian's package, installed when missing and we are root) for the page tests
#   - unleash-server 7.x from npm (tests/unleash_server), on that PostgreSQL; it starts in the
#     background while the tests run, and the tests that need it wait for it to be healthy
#   - openapi-typescript and TypeScript from npm (tests/frontend), for the API document's check
# Exports SWITCHBOARD_TEST_POSTGRES_URL (and SWITCHBOARD_TEST_PG_CTL for fault tests) and
# SWITCHBOARD_TEST_UNLEASH_URL with its admin and client tokens.
# Usage: scripts/test-services.sh COMMAND [ARGS...]
set -euo pipefail
# runuser and PostgreSQL's helpers live in sbin, which a minimal PATH leaves out.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/switchboard-test.XXXXXX")"
chmod 755 "$work"
pids=()

log() { printf '[test-services] %s\n' "$*" >&2; }

cleanup() {
  set +e
  # Only stop the PostgreSQL this script started, never one the caller pointed us at.
  if [[ -n "${started_postgres:-}" ]]; then "$here/pg.sh" stop >/dev/null 2>&1; fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

find_pg_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x "$dir/initdb" ]] && { echo "$dir"; return 0; }
  done
  return 1
}

ensure_postgres() {
  if find_pg_bin >/dev/null; then return 0; fi
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
    log "installing PostgreSQL (Debian package postgresql)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  find_pg_bin >/dev/null
}

start_postgres() {
  local bin port data run_as=()
  bin="$(find_pg_bin)"
  port="$(free_port)"
  data="$work/pgdata"
  mkdir -p "$data" "$work/pgsock" "$work/pglog"
  if [[ "$(id -u)" == "0" ]]; then
    chown -R postgres:postgres "$data" "$work/pgsock" "$work/pglog"
    run_as=(runuser -u postgres --)
  fi
  "${run_as[@]}" "$bin/initdb" -D "$data" -U postgres -A trust --no-sync -E UTF8 >/dev/null
  export PGCTL_CMD="${run_as[*]:+${run_as[*]} }$bin/pg_ctl -D $data -l $work/pglog/postgres.log -w -t 30"
  export PG_OPTIONS="-c listen_addresses=127.0.0.1 -p $port -k $work/pgsock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
  "$here/pg.sh" start >/dev/null
  started_postgres=1
  export SWITCHBOARD_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
  export SWITCHBOARD_TEST_PG_CTL="$here/pg.sh"
  export SWITCHBOARD_TEST_PG_DUMP="${run_as[*]:+${run_as[*]} }$bin/pg_dump -h 127.0.0.1 -p $port -U postgres"
  log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}

# npm ci in a folder of tests/ when its lock file is newer than what is installed there.
ensure_npm_packages() {
  local dir="$here/../tests/$1" what="$2"
  command -v node >/dev/null && command -v npm >/dev/null || return 1
  if [[ ! -f "$dir/node_modules/.package-lock.json" || "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]]; then
    log "installing $what (npm ci in tests/$1)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}

ensure_unleash_packages() {
  ensure_npm_packages unleash_server "unleash-server and the Unleash client specification"
}

start_unleash() {
  local bin port secret
  bin="$(find_pg_bin)"
  port="$(free_port)"
  secret="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  local pg_port="${SWITCHBOARD_TEST_POSTGRES_URL##*:}"
  pg_port="${pg_port%%/*}"
  local database="unleash_${secret:0:8}"  # a fresh database per run: no state from an earlier one
  "$bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U postgres -c "CREATE DATABASE $database" >/dev/null
  export SWITCHBOARD_TEST_UNLEASH_ADMIN_TOKEN="*:*.admin-$secret"
  export SWITCHBOARD_TEST_UNLEASH_CLIENT_TOKEN="default:development.client-$secret"
  (
    cd "$here/../tests/unleash_server"
    NODE_ENV=production DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/$database" UNLEASH_PORT="$port" \
      INIT_ADMIN_API_TOKENS="$SWITCHBOARD_TEST_UNLEASH_ADMIN_TOKEN" \
      INIT_BACKEND_API_TOKENS="$SWITCHBOARD_TEST_UNLEASH_CLIENT_TOKEN" \
      exec node server.js >"$work/unleash.log" 2>&1
  ) &
  pids+=("$!")
  export SWITCHBOARD_TEST_UNLEASH_URL="http://127.0.0.1:$port"
  export SWITCHBOARD_TEST_UNLEASH_LOG="$work/unleash.log"
  log "unleash-server starting on 127.0.0.1:$port (log: $work/unleash.log)"
}

ensure_chromium() {
  command -v chromium >/dev/null && return 0
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null; then
    log "installing Chromium (Debian package chromium) for the page tests"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  command -v chromium >/dev/null || log "Chromium is not installed: page tests will skip"
}

ensure_chromium
ensure_npm_packages frontend "openapi-typescript and TypeScript" || log "Node.js/npm not found: the TypeScript check of the API document will skip"

if [[ -z "${SWITCHBOARD_TEST_POSTGRES_URL:-}" ]]; then
  if ensure_postgres; then
    start_postgres
  else
    log "PostgreSQL is not installed and cannot be installed here: PostgreSQL tests will skip"
  fi
fi

if [[ -z "${SWITCHBOARD_TEST_UNLEASH_URL:-}" && -n "${SWITCHBOARD_TEST_POSTGRES_URL:-}" ]]; then
  if ensure_unleash_packages; then
    start_unleash
  else
    log "Node.js/npm not found: unleash-server tests will skip"
  fi
fi
export SWITCHBOARD_TEST_UNLEASH_SPEC_DIR="$here/../tests/unleash_server/node_modules/@unleash/client-specification/specifications"

"$@"
