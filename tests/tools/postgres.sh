#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the tests of the PostgreSQL store.
#
#   eval "$(tests/tools/postgres.sh start DIR)"   # prints an export line
#   tests/tools/postgres.sh stop DIR
#
# `start` creates a cluster in DIR (which must not hold one yet), listening
# on a free TCP port of 127.0.0.1 only (its Unix socket is inside DIR), with
# a database and a role `smdpplus` whose password is random. It prints
#   export SMDPPLUS_TEST_POSTGRES=postgres://smdpplus:PASSWORD@127.0.0.1:PORT/smdpplus
#   export SMDPPLUS_TEST_POSTGRES_CA=DIR/ca.crt
# on stdout (everything else goes to stderr) and writes the URL to DIR/url.
# The server also accepts TLS, with a certificate for 127.0.0.1 and
# localhost from a throw-away CA (DIR/ca.crt, made with openssl).
# `stop` stops the cluster and removes DIR.
# The cluster does not fsync (tests only need it fast) unless
# SMDPPLUS_PG_FSYNC=on, as for the benchmarks.
#
# initdb refuses to run as root: as root the cluster runs as the `postgres`
# user that Debian's postgresql package creates.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
action=$1
dir=$2

bindir() {
  local d
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if [ -x "$d/initdb" ]; then
      echo "$d"
      return
    fi
  fi
  # Debian keeps the server binaries out of PATH; take the newest version.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ]; then
      echo "$d"
      return
    fi
  done
  echo "postgres.sh: no initdb found (apt-get install postgresql)" >&2
  exit 1
}

# Runs a command as the cluster's owner.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local bin port password
  bin=$(bindir)
  if [ -e "$dir/data" ]; then
    echo "postgres.sh: $dir already holds a cluster" >&2
    exit 1
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
  fi
  chmod 0700 "$dir"
  password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
  as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    exit 1
  }
  # A throw-away CA and the server's certificate, for the TLS tests.
  (
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
      -subj "/CN=smdpplus test PostgreSQL CA" -keyout ca.key -out ca.crt \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 \
      -extfile server.ext -out server.crt 2>/dev/null
    rm -f ca.key ca.srl server.csr server.ext
    chmod 0600 server.key
    chmod 0644 ca.crt server.crt
  )
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir/server.key" "$dir/server.crt" "$dir/ca.crt"
  fi
  # A port taken between free_port and the start makes pg_ctl fail: retry.
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=${SMDPPLUS_PG_FSYNC:-off} -c max_connections=300 -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key" start >&2; then
      break
    fi
    port=
  done
  if [ -z "$port" ]; then
    cat "$dir/server.log" >&2
    exit 1
  fi
  as_owner "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q >&2 <<SQL
CREATE ROLE smdpplus LOGIN PASSWORD '$password';
CREATE DATABASE smdpplus OWNER smdpplus;
SQL
  url="postgres://smdpplus:$password@127.0.0.1:$port/smdpplus"
  (umask 077 && echo "$url" >"$dir/url")
  echo "postgres.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $dir" >&2
  echo "export SMDPPLUS_TEST_POSTGRES=$url"
  echo "export SMDPPLUS_TEST_POSTGRES_CA=$dir/ca.crt"
}

stop() {
  local bin
  bin=$(bindir)
  if [ -d "$dir/data" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
  fi
  rm -rf "$dir"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
