#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests and benchmarks: Debian's package (installed only when no
# server binaries are there), a fresh cluster in DIR listening on 127.0.0.1 only, and a login role with a
# random password that exists only in the environment of the caller.
#
#   eval "$(bash deploy/postgres/scratch_server.sh start DIR)"   # prints the DAGSTER_PG_* exports
#   bash deploy/postgres/scratch_server.sh stop DIR              # stops the server, removes DIR
#
# The exports are the variables deploy/postgres/dagster.yaml reads; the role may create databases, so
# each test gets a database of its own. Everything but the exports goes to stderr.
set -euo pipefail
action=${1:?usage: scratch_server.sh start|stop DIR}
dir=${2:?usage: scratch_server.sh start|stop DIR}
role=staging_validation

server_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
# initdb and the server refuse to run as root: as root, they run as Debian's postgres user.
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case $action in
start)
  if [ -z "$(server_bin)" ]; then
    echo "installing Debian's postgresql package" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  fi
  bin=$(server_bin)
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  password=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
  as_owner "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --auth-local=trust --auth-host=scram-sha-256 \
    > "$dir/initdb.log"
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir" start >&2
  # The password goes through stdin, never a command line (visible in ps).
  printf "\\set pw '%s'\nCREATE ROLE %s LOGIN CREATEDB PASSWORD :'pw';\nCREATE DATABASE %s OWNER %s;\n" \
    "$password" "$role" "$role" "$role" \
    | as_owner "$bin/psql" -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 >&2
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $dir/data" >&2
  cat <<EXPORTS
export DAGSTER_PG_HOST=127.0.0.1
export DAGSTER_PG_PORT=$port
export DAGSTER_PG_USERNAME=$role
export DAGSTER_PG_PASSWORD=$password
export DAGSTER_PG_DB=$role
EXPORTS
  ;;
stop)
  bin=$(server_bin)
  if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: scratch_server.sh start|stop DIR" >&2
  exit 2
  ;;
esac
