# Sourced by scripts/test: starts a throwaway PostgreSQL cluster on loopback
# for the PostgreSQL store's tests, installing PostgreSQL from Debian's
# packages if it is missing, and exports FLOWSTATE_TEST_DATABASE_URL. The
# cluster lives in a temporary directory and is stopped on exit. It runs
# without fsync: these tests check behaviour, not power-loss durability.

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ]; then
  echo "scripts/test: installing PostgreSQL (Debian package) for the PostgreSQL store's tests" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    sudo apt-get update -qq >/dev/null
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

pg_dir=$(mktemp -d /tmp/flowstate-pg.XXXXXX)
pg_port=${FLOWSTATE_TEST_PG_PORT:-54329}
# initdb refuses to run as root: run the cluster as the postgres user then.
if [ "$(id -u)" = 0 ]; then
  chown postgres "$pg_dir"
  pg_as() { runuser -u postgres -- "$@"; }
else
  pg_as() { "$@"; }
fi
pg_as "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 >"$pg_dir/initdb.log" 2>&1 \
  || { cat "$pg_dir/initdb.log" >&2; exit 1; }
pg_as "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
  -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off" start >/dev/null \
  || { cat "$pg_dir/server.log" >&2; exit 1; }
pg_stop() { pg_as "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$pg_dir"; }
trap pg_stop EXIT
export FLOWSTATE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
