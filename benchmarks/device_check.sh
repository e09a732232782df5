#!/usr/bin/env bash
# The reverse, translate, attention and sweep benchmarks in small settings,
# each writing its JSON under $OUT (default: benchmarks/runs/device-check):
# a few minutes on a GPU machine (under 4 there), longer on a CPU.
#
#   bash benchmarks/device_check.sh           # the GPU settings
#   bash benchmarks/device_check.sh --quick   # tiny: checks it runs (CPU)
#
# The pair file of translate and attention: $SEQJAX_CMN_PATH, the repo's
# ../shared/data/cmn-eng/cmn.txt or shared/data/cmn-eng/cmn.txt; without
# one, made-up pairs (tests/translate_util.toy_pairs) stand in and the
# JSON's command line says so. Peers (Keras, PyTorch) are not run: the
# absolute seqjax numbers are what a device shows. A failing benchmark is
# reported and the others still run; the exit status is the failures'
# count.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/runs/device-check}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

DATA="${SEQJAX_CMN_PATH:-}"
for c in ../shared/data/cmn-eng/cmn.txt shared/data/cmn-eng/cmn.txt; do
  [ -z "$DATA" ] && [ -f "$c" ] && DATA="$c"
done
if [ -z "$DATA" ]; then
  DATA="$OUT/toy_pairs.txt"
  "$PY" -c "
import sys; sys.path.insert(0, '.')
from tests import translate_util
translate_util.write_pairs('$DATA', translate_util.toy_pairs(2000))"
  echo "no cmn.txt: made-up pairs in $DATA"
fi

if [ "$QUICK" = 1 ]; then
  REV="--train_samples=3200 --decode_n=500 --decode_batch=500 --loop_n=20 --ceiling_n=256"
  TRA="--train_samples=640 --decode_n=100 --decode_batch=100 --loop_n=5 --ceiling_n=256 --settings=num_samples=1000,latent_dim=32"
  ATT="--train_samples=640 --ceiling_n=256 --settings=num_samples=1000,units=32,embedding_dim=16"
  SWP="--train_samples=1600 --settings=units=32,more=16,steps_per_call=10"
else
  REV="--train_samples=50000 --decode_n=10000 --loop_n=100"
  TRA="--train_samples=4000 --decode_n=1000 --loop_n=10"
  ATT="--train_samples=4000"
  SWP="--train_samples=16000 --settings=more=16;32;64"
fi

fail=0
run() {
  local name="$1"; shift
  echo "=== $name: python -m benchmarks.run --workload=$name $* ==="
  local t0=$SECONDS
  if "$PY" -m benchmarks.run --workload="$name" --peers= --reps=1 \
      --json="$OUT/$name.json" "$@" > "$OUT/$name.log" 2>&1; then
    grep -v '^[IW][0-9]' "$OUT/$name.log" | tail -n 12
  else
    echo "FAILED (log: $OUT/$name.log)"; tail -n 20 "$OUT/$name.log"
    fail=$((fail + 1))
  fi
  echo "--- $name: $((SECONDS - t0)) s"
}
run reverse $REV
run translate --data_path="$DATA" $TRA
run attention --data_path="$DATA" $ATT
run sweep $SWP
echo "JSON under $OUT; $fail failure(s)"
exit "$fail"
