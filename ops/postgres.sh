# Sourced by ops/test.sh and the benchmarks: makes sure a PostgreSQL server
# runs here and exports OXBASE_TEST_POSTGRES_URI, a URI for a role that may
# create databases. Installs Debian's postgresql package when it is missing.
# With OXBASE_TEST_POSTGRES_URI already set, that server is used as is.

if [ -z "${OXBASE_TEST_POSTGRES_URI:-}" ]; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "==> installing PostgreSQL" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  pg_version=$(ls /usr/lib/postgresql | sort -V | tail -1)
  pg_lsclusters -h | grep -q "^$pg_version main" || pg_createcluster "$pg_version" main >/dev/null
  pg_ctlcluster "$pg_version" main start 2>/dev/null || true
  pg_port=$(pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main" {print $3}')
  for _ in $(seq 50); do pg_isready -q -p "$pg_port" && break; sleep 0.2; done
  if ! pg_isready -q -p "$pg_port"; then
    echo "PostgreSQL did not start; see /var/log/postgresql" >&2
    return 1
  fi
  runuser -u postgres -- psql -qp "$pg_port" -c "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'oxbase') THEN
        CREATE ROLE oxbase SUPERUSER LOGIN PASSWORD 'oxbase';
      END IF; END \$\$;" >/dev/null
  export OXBASE_TEST_POSTGRES_URI="postgres://oxbase:oxbase@127.0.0.1:$pg_port/postgres"
fi
