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
bin="$PWD/target/release/kks-switch"
work="$(mktemp -d /tmp/kks-wave.XXXXXX)"
trap 'rm -rf "$work"' EXIT

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

echo "== seed $families families ($store, bulk path: no CSV files)"
/usr/bin/time -f "seed: %e s wall, peak RSS %M KiB" \
  "$bin" --db "$url" --log-format json seed --families "$families" --out "$work" --no-files \
  2> >(grep -v '"level":"INFO"' >&2)

echo "== disburse $program $period from entitlements"
cd "$work"
/usr/bin/time -o "$work/time.txt" -f "%e %M" \
  "$bin" --db "$url" --log-format json disburse --program "$program" --period "$period" \
  2> >(grep -v '"level":"INFO"' >&2)
read -r wall peak_kib < "$work/time.txt"
awk -v w="$wall" -v k="$peak_kib" -v n="$families" 'BEGIN {
  printf "disburse process: %s s wall, peak RSS %.0f MiB (%.0f bytes per family)\n", w, k / 1024, k * 1024 / n
}'
