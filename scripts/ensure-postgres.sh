#!/usr/bin/env bash
# Make a local PostgreSQL answer on 127.0.0.1:5432 with a `keystone` role that
# may create databases, for the migration tests. Installs Debian's postgresql
# when it is missing (CI starts from a fresh Debian 12 machine). Idempotent.
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
fi
cluster=$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')
if [ -z "$cluster" ]; then
  pg_createcluster 15 main >/dev/null
  cluster="15 main"
fi
set -- $cluster
if ! pg_lsclusters --no-header | awk -v v="$1" -v c="$2" '$1==v && $2==c {print $4}' | grep -q online; then
  pg_ctlcluster "$1" "$2" start
fi
for _ in $(seq 1 50); do
  if su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
su postgres -c "psql -qAtc \"select 1 from pg_roles where rolname='keystone'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"create role keystone login createdb password 'keystone'\""
echo "postgresql://keystone:keystone@127.0.0.1:5432/postgres"
