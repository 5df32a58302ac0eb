#!/usr/bin/env bash
# scripts/bench_manycore.sh end to end on this machine's binaries, small: 2 and 3 ranks (3 is
# oversubscribed on a 2-CPU machine), one repeat, sizes up to 32 KiB. Checks that both libraries
# produced every row, that the report says which rank counts ran oversubscribed, and that bad
# arguments are refused with a message. Usage: bench_manycore_check.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
build=$2
out=$(mktemp -d /tmp/weft-manycore-check.XXXXXX)
trap 'rm -rf "$out"' EXIT
fail() { echo "FAIL: $*" >&2; cat "$out/report.md" >&2 2>/dev/null || true; exit 1; }

"$src/scripts/bench_manycore.sh" --no-build --build "$build" --ranks "2 3" --repeats 1 \
  --iters 2 --small --out "$out" > "$out/log" 2>&1 || { cat "$out/log" >&2; fail "the script failed"; }
report="$out/report.md"
[ -s "$report" ] || fail "no report"
for n in 2 3; do
  grep -q "^## $n ranks" "$report" || fail "no table for $n ranks"
done
if [ "$(nproc)" -lt 3 ]; then
  grep -q "^## 3 ranks (oversubscribed)" "$report" || fail "3 ranks on $(nproc) CPUs not marked oversubscribed"
fi
for size in "8 B" "64 B" "512 B" "4 KiB" "32 KiB"; do
  rows=$(grep -c "^| $size |" "$report" || true)
  [ "$rows" -eq 2 ] || fail "size $size: $rows rows, want one per rank count"
done
# Every row has both libraries and a ratio.
if grep "^| [0-9]" "$report" | grep -q "—"; then fail "a row lacks a library"; fi
weft_rows=$(grep -c '"lib":"weft"' "$out/raw.jsonl" || true)
mpi_rows=$(grep -c '"lib":"openmpi"' "$out/raw.jsonl" || true)
[ "$weft_rows" -eq 10 ] && [ "$mpi_rows" -eq 10 ] || fail "raw rows: weft $weft_rows, Open MPI $mpi_rows, want 10 each"

# Bad input: a clear refusal, nothing run.
if msg=$("$src/scripts/bench_manycore.sh" --no-build --build "$build" --ranks "1" 2>&1); then
  fail "--ranks 1 was accepted"
fi
echo "$msg" | grep -q "rank counts of 2 or more" || fail "--ranks 1: unclear message: $msg"
if msg=$("$src/scripts/bench_manycore.sh" --no-build --build "$build" --repeats x 2>&1); then
  fail "--repeats x was accepted"
fi
echo "$msg" | grep -q "positive number" || fail "--repeats x: unclear message: $msg"
if msg=$("$src/scripts/bench_manycore.sh" --no-build --build "$out/nowhere" 2>&1); then
  fail "a missing build was accepted"
fi
echo "$msg" | grep -q "is missing" || fail "missing build: unclear message: $msg"
echo "bench_manycore_check: ok"
