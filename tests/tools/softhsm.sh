#!/usr/bin/env bash
# A throw-away SoftHSM2 token for the tests of the PKCS#11 key store.
#
#   eval "$(tests/tools/softhsm.sh start DIR)"   # prints export lines
#   tests/tools/softhsm.sh stop DIR
#
# `start` writes a SoftHSM2 configuration in DIR (which must not hold one
# yet) whose token directory is DIR/tokens, so nothing outside DIR is read or
# written, and initialises one token labelled `smdpplus-test` with a random
# user PIN (DIR/pin) and security officer PIN (DIR/so-pin), both mode 0600.
# It prints
#   export SOFTHSM2_CONF=DIR/softhsm2.conf
#   export SMDPPLUS_TEST_HSM_MODULE=<path of libsofthsm2.so>
#   export SMDPPLUS_TEST_HSM_TOKEN=smdpplus-test
#   export SMDPPLUS_TEST_HSM_PIN_FILE=DIR/pin
#   export SMDPPLUS_TEST_HSM_SO_PIN_FILE=DIR/so-pin
# on stdout (everything else goes to stderr). The tests initialise a token
# of their own beside it in the same directory (softhsm2-util --free), so
# that they do not see each other's keys.
# `stop` removes DIR (SoftHSM2 is a library: there is no process to stop).
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
action=$1
dir=$2

module() {
  local m
  # Debian's libsofthsm2 installs /usr/lib/softhsm/libsofthsm2.so; other
  # layouts keep it under the multiarch directory.
  for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so \
    /usr/local/lib/softhsm/libsofthsm2.so; do
    if [ -f "$m" ]; then
      echo "$m"
      return
    fi
  done
  echo "softhsm.sh: libsofthsm2.so not found (apt-get install softhsm2)" >&2
  exit 1
}

start() {
  local lib
  lib=$(module)
  command -v softhsm2-util >/dev/null 2>&1 || {
    echo "softhsm.sh: softhsm2-util not found (apt-get install softhsm2)" >&2
    exit 1
  }
  if [ -e "$dir/softhsm2.conf" ]; then
    echo "softhsm.sh: $dir already holds a token" >&2
    exit 1
  fi
  mkdir -p "$dir/tokens"
  dir=$(cd "$dir" && pwd)
  chmod 0700 "$dir" "$dir/tokens"
  cat >"$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
  (
    umask 077
    head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/pin"
    head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/so-pin"
  )
  # softhsm2-util takes the PINs as arguments: this token is a test's,
  # thrown away with DIR. smdpplus itself reads its PIN from a file or the
  # environment only.
  SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free \
    --label smdpplus-test --pin "$(cat "$dir/pin")" --so-pin "$(cat "$dir/so-pin")" >&2
  echo "softhsm.sh: SoftHSM2 $(softhsm2-util --version) token smdpplus-test in $dir" >&2
  echo "export SOFTHSM2_CONF=$dir/softhsm2.conf"
  echo "export SMDPPLUS_TEST_HSM_MODULE=$lib"
  echo "export SMDPPLUS_TEST_HSM_TOKEN=smdpplus-test"
  echo "export SMDPPLUS_TEST_HSM_PIN_FILE=$dir/pin"
  echo "export SMDPPLUS_TEST_HSM_SO_PIN_FILE=$dir/so-pin"
}

stop() {
  rm -rf "$dir"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
