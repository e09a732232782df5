#!/usr/bin/env bash
# Trains a short reverse run, serves its <workdir>/tb/ with TensorBoard on a
# loopback port, and saves a headless Chromium screenshot of the loss curve
# as docs/tensorboard.png. The server is stopped on exit, however it exits.
#
#   scripts/tensorboard_screenshot.sh [OUT_PNG]
#
# Needs: pip install -e '.[tensorboard]' tensorboard; Chromium (Debian:
# apt-get install -y chromium). WORKDIR (default: a temporary directory),
# EPOCHS (2) and PYTHON (python) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/tensorboard.png}
PYTHON=${PYTHON:-python}
EPOCHS=${EPOCHS:-2}
TMP=$(mktemp -d)
WORKDIR=${WORKDIR:-$TMP/reverse}
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
BROWSER=$(command -v chromium || command -v chromium-browser ||
          command -v google-chrome || true)
if [[ -z "$BROWSER" ]]; then
  echo "Error: no Chromium found (Debian: apt-get install -y chromium)" >&2
  exit 2
fi

export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
"$PYTHON" -m experiments.reverse --epochs="$EPOCHS" --log_every=50 \
    --workdir="$WORKDIR"
# Until the binaries write tb/ themselves: rebuild it from metrics.jsonl,
# exactly as a resume does, with the run's flags as text.
"$PYTHON" - "$WORKDIR" <<'PY'
import json, os, sys
from seqjax import reliability, tensorboard
workdir = sys.argv[1]
rows = reliability.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
step = max(r["step"] for r in rows)
with tensorboard.TensorBoardLog.resume(workdir, step) as log:
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  log.text("flags", 0, tensorboard.flags_markdown(results["flags"]))
print(f"Wrote {len(rows)} metrics.jsonl rows to {workdir}/tb/")
PY

PORT=$("$PYTHON" -c 'import socket; s = socket.socket()
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
"$PYTHON" -m tensorboard.main --logdir_spec "reverse:$WORKDIR/tb" \
    --host 127.0.0.1 --port "$PORT" > "$TMP/tensorboard.log" 2>&1 &
SERVER_PID=$!
READY=""
for _ in $(seq 60); do  # up to 30 s for the server to answer
  if "$PYTHON" -c "import urllib.request as u, sys
u.urlopen(sys.argv[1], timeout=1)" "$URL/data/runs" 2>/dev/null; then
    READY=1
    break
  fi
  sleep 0.5
done
if [[ -z "$READY" ]]; then
  echo "Error: TensorBoard did not answer on $URL (pip install tensorboard?):" >&2
  cat "$TMP/tensorboard.log" >&2
  exit 1
fi
mkdir -p "$(dirname "$OUT")"
# The Scalars dashboard draws with SVG; Time Series needs WebGL, which
# headless Chromium without a GPU does not draw. --virtual-time-budget lets
# the page's scripts fetch and draw before the shot.
"$BROWSER" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size=1400,480 --virtual-time-budget=20000 \
    --user-data-dir="$TMP/chromium" --screenshot="$OUT" \
    "$URL/#scalars&tagFilter=loss%7Caccuracy" \
    2> "$TMP/chromium.log"
echo "Wrote $OUT"
