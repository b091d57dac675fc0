#!/usr/bin/env bash
# Runs one fuzz target for a bounded time; exits nonzero if it finds a crash.
#
#   fuzz/run.sh [SECONDS] [TARGET]       (defaults: 60 saip_decode)
#
# Works on a stable toolchain. By default it builds without a sanitizer
# (`--sanitizer none`): only stable rustc flags, a faster build, and about
# three times the executions per second; the decoders are safe Rust, so a
# panic (including arithmetic overflow: cargo-fuzz enables debug assertions)
# is what we look for. FUZZ_SANITIZER=address gives cargo-fuzz's usual
# AddressSanitizer build, whose `-Zsanitizer` stable rustc accepts once
# RUSTC_BOOTSTRAP=1 is set (done here). Crashes land in
# fuzz/artifacts/TARGET/, the growing corpus in fuzz/corpus/TARGET/ (both
# ignored by git). The committed seeds in fuzz/seeds/TARGET/ (or, for a
# target without its own, fuzz/seeds/saip_decode/) are read but never
# written; likewise the dictionary fuzz/TARGET.dict (else fuzz/saip.dict).
set -euo pipefail

secs="${1:-60}"
target="${2:-saip_decode}"
sanitizer="${FUZZ_SANITIZER:-none}"
case "$secs" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ "$sanitizer" != none ]; then
  export RUSTC_BOOTSTRAP=1
fi

corpus="fuzz/corpus/$target"
mkdir -p "$corpus"
seeds="fuzz/seeds/$target"
[ -d "$seeds" ] || seeds=fuzz/seeds/saip_decode
dict="fuzz/$target.dict"
[ -f "$dict" ] || dict=fuzz/saip.dict

echo "== cargo fuzz run $target for ${secs}s (sanitizer: $sanitizer, seeds: $seeds, dict: $dict)"
# One process (no -jobs/-fork): the machine has other work to do, and a
# crash then stops the run and fails this script with libFuzzer's status.
exec cargo fuzz run --sanitizer "$sanitizer" "$target" "$corpus" "$seeds" -- \
  -max_total_time="$secs" \
  -max_len=8192 \
  -dict="$dict" \
  -timeout=10 \
  -rss_limit_mb=2048 \
  -print_final_stats=1
