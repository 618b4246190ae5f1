#!/usr/bin/env bash
# Pretrain on a bare GPU worker from a pack made by scripts/gpu_worker/pack.py; the bundle lands in $OUT.
#
#   OUT=/some/folder bash worker-pack/run.sh --preset tiny --device cuda --steps 3000 --batch-size 64
#
# Arguments are nerfdiff-pretrain flags (--data, --output-dir and --no-log-tensorboard are set here:
# the worker has no tensorboard); paths in them must be absolute (training runs in $WORK). Environment:
#   OUT         folder that receives bundle/, losses.jsonl, pretrain_config.json, train.log (required)
#   PYTHON      interpreter (default: python3)
#   TIME_LIMIT  seconds for the whole script (unpacking included): training is stopped with SIGINT when
#               they run out and the bundle of the last checkpoint is kept (default 540: fits a 10-minute slot)
#   WORK        scratch folder for the unpacked code, packages, data and run (default: a new mktemp -d)
set -euo pipefail

PACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${OUT:?set OUT to the folder that should receive the bundle}"
PYTHON="${PYTHON:-python3}"
TIME_LIMIT="${TIME_LIMIT:-540}"
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$OUT" "$WORK"
OUT="$(cd "$OUT" && pwd)" WORK="$(cd "$WORK" && pwd)"  # absolute: the script changes folder below
start=$(date +%s)

for part in code site data; do
  tar -xzf "$PACK/$part.tar.gz" -C "$WORK"
done
# Packed packages that clash with the worker's own (a build for another Python, or versions its other packages
# cannot import with) give way to the worker's: see prune_site.py (run before site/ is on the path).
"$PYTHON" "$PACK/prune_site.py" "$WORK/site" || exit 1
# The pack's packages come before any the worker has, so the versions tested with this code are used;
# compiled parts built for another Python are skipped by the import system (pure-Python fallbacks).
export PYTHONPATH="$WORK/code:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DIFFUSERS_NO_ADVISORY_WARNINGS=1
# python -m / python - put the current folder first on sys.path: run from $WORK so that a checkout
# of the repository in the caller's folder cannot shadow the packed code.
cd "$WORK"
"$PYTHON" - <<'EOF'
import sys, torch, diffusers, nerfdiff_ns
cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
print(f"[worker] python {sys.version.split()[0]}, torch {torch.__version__} ({cuda}), diffusers {diffusers.__version__}, "
      f"nerfdiff_ns from {nerfdiff_ns.__file__}")
EOF
echo "[worker] unpacked in $(( $(date +%s) - start )) s into $WORK"

left=$(( TIME_LIMIT - ($(date +%s) - start) - 10 ))  # 10 s to copy the results
if [ "$left" -le 0 ]; then
  echo "[worker] TIME_LIMIT=${TIME_LIMIT}s was used up by unpacking; raise it" >&2
  exit 1
fi
set +e
timeout --signal=INT --kill-after=20 "$left" \
  "$PYTHON" -m nerfdiff_ns.pretrain --data "$WORK/data" --output-dir "$WORK/run" --no-log-tensorboard "$@" \
  2>&1 | tee "$OUT/train.log"
status=${PIPESTATUS[0]}
set -e

for file in losses.jsonl pretrain_config.json; do
  [ -f "$WORK/run/$file" ] && cp "$WORK/run/$file" "$OUT/"
done
if [ ! -f "$WORK/run/bundle/config.json" ]; then
  echo "[worker] no bundle was written (exit status $status); see $OUT/train.log" >&2
  exit $(( status == 0 ? 1 : status ))
fi
rm -rf "$OUT/bundle"
cp -r "$WORK/run/bundle" "$OUT/bundle"
if [ "$status" -eq 124 ] || [ "$status" -eq 130 ]; then
  echo "[worker] stopped at TIME_LIMIT=${TIME_LIMIT}s; $OUT/bundle was saved when it stopped (or at the last checkpoint)"
elif [ "$status" -ne 0 ]; then
  echo "[worker] training failed (exit status $status); $OUT/bundle is the last checkpoint's" >&2
  exit "$status"
fi
echo "[worker] bundle in $OUT/bundle after $(( $(date +%s) - start )) s"
