#!/usr/bin/env bash
# Installs PostgreSQL from Debian's packages if it is missing, starts a local server and
# creates the test role and database. Prints the SQLAlchemy URL for METALEARN_TEST_POSTGRES_URL.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {found=1} END {exit !found}'; then
  pg_createcluster "$version" main >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
pg_ctlcluster "$version" main start >&2 2>/dev/null || true  # already running is fine
for _ in $(seq 60); do
  "/usr/lib/postgresql/$version/bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
  sleep 1
done
runuser -u postgres -- psql -q -p "$port" -v ON_ERROR_STOP=1 >&2 <<'SQL'
SELECT 'CREATE ROLE metalearn LOGIN PASSWORD ''metalearn'''
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'metalearn') \gexec
SELECT 'CREATE DATABASE metalearn_test OWNER metalearn'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'metalearn_test') \gexec
SQL
echo "postgresql+psycopg://metalearn:metalearn@127.0.0.1:${port}/metalearn_test"
