#!/usr/bin/env bash
# Disbursement wave bench (issue #4 item 7), run by hand, not in CI.
#
#   bash benches/wave.sh [FAMILIES] [sqlite|postgres] [PROGRAM] [PERIOD]
#
# Seeds FAMILIES families into a fresh store with the bulk path of `seed`
# (`--no-files`: no CSV files), then credits one wave from the families'
# entitlements with `disburse` and prints its summary (whose "credit phase"
# line is the wave's credit time) and the disburse process's peak resident
# memory, from /usr/bin/time. Defaults: 1000000 sqlite BPNT 2026-01.
#
# PostgreSQL: KKS_BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test);
# the bench works in its own schema `wave_bench`, dropped and recreated.
set -euo pipefail
cd "$(dirname "$0")/.."

families="${1:-1000000}"
store="${2:-sqlite}"
program="${3:-BPNT}"
period="${4:-2026-01}"

cargo build --release --quiet --bin kks-switch
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/kks-switch"
# KKS_WAVE_DIR keeps the seeded fixture there (SQLite: a pristine copy,
# seeded.db, is made once and copied for each run, so a rerun skips the seed).
if [ -n "${KKS_WAVE_DIR:-}" ]; then
  work="$KKS_WAVE_DIR"
  mkdir -p "$work"
else
  work="$(mktemp -d /tmp/kks-wave.XXXXXX)"
  trap 'rm -rf "$work"' EXIT
fi

case "$store" in
  sqlite)
    url="sqlite://$work/wave.db"
    ;;
  postgres)
    base="${KKS_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
    PGOPTIONS="--client-min-messages=warning" psql "$base" -q \
      -c "DROP SCHEMA IF EXISTS wave_bench CASCADE; CREATE SCHEMA wave_bench;"
    url="$base?options=-csearch_path%3Dwave_bench"
    ;;
  *)
    echo "store must be sqlite or postgres" >&2
    exit 2
    ;;
esac

if [ "$store" = sqlite ] && [ -f "$work/seeded.db" ] && [ "$(cat "$work/seeded.families" 2>/dev/null)" = "$families" ]; then
  echo "== reusing the seeded fixture in $work"
  rm -f "$work"/wave.db*
  cp "$work/seeded.db" "$work/wave.db"
else
  echo "== seed $families families ($store, bulk path: no CSV files)"
  rm -f "$work"/wave.db*
  /usr/bin/time -f "seed: %e s wall, peak RSS %M KiB" \
    "$bin" --db "$url" --log-format json seed --families "$families" --out "$work" --no-files \
    2> >(grep -v '"level":"INFO"' | grep -v 'slow statement' >&2)
  if [ "$store" = sqlite ] && [ -n "${KKS_WAVE_DIR:-}" ]; then
    # A clean copy: the seed's process has ended, so its WAL is folded in.
    sqlite3 "$work/wave.db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null 2>&1 || true
    cp "$work/wave.db" "$work/seeded.db"
    echo "$families" > "$work/seeded.families"
  fi
fi

echo "== disburse $program $period from entitlements"
cd "$work"
/usr/bin/time -o "$work/time.txt" -f "%e %M" \
  "$bin" --db "$url" --log-format json disburse --program "$program" --period "$period" \
  2> >(grep -v '"level":"INFO"' | grep -v 'slow statement' >&2)
read -r wall peak_kib < "$work/time.txt"
awk -v w="$wall" -v k="$peak_kib" -v n="$families" 'BEGIN {
  printf "disburse process: %s s wall, peak RSS %.0f MiB (%.0f bytes per family)\n", w, k / 1024, k * 1024 / n
}'
