#!/usr/bin/env bash
# Pretraining throughput on a bare GPU worker: benchmarks/train_throughput.py per preset and batch, on the
# worker's torch with a pack's packages (scripts/gpu_worker/pack.py). Run from the repository root:
#
#   OUT=/results SPECS="tiny 256 0;tiny 256 6;tiny 1024 6;tiny-64 256 6" bash scripts/gpu_worker/throughput.sh
#
#   PACK        the pack folder (default .gpu/pack)
#   BENCH_DATA  datasets made here beforehand (the worker cannot generate them: no pybullet, no trimesh):
#               <BENCH_DATA>/<res>px-8x4, e.g. by benchmarks/train_throughput.py's make_dataset (default .gpu/bench-data)
#   SPECS       "preset batch [workers [target_rays]]" separated by ';' (workers: pretraining's --loader-workers,
#               default 0 = batches built in the training process, as measured on 2026-12-04; target_rays: its
#               --target-rays, default 0 = the NeRF loss over every pixel)
#   PROFILE_STEPS  after the timed steps, this many steps timed phase by phase and as many under torch.profiler:
#               where the step's time goes (benchmarks/train_throughput.py --profile-steps; default 0 = none)
#   DEV         cuda (default) or cpu      PYTHON  python3
# Each run's figures land in $OUT/tp-<preset>-<batch>-w<workers>[-r<target_rays>].json.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 DIFFUSERS_NO_ADVISORY_WARNINGS=1
: "${OUT:?set OUT to the folder that should receive the figures}"
R=$(pwd); PACK=${PACK:-.gpu/pack}; DATA=$(cd "${BENCH_DATA:-.gpu/bench-data}" && pwd)
DEV=${DEV:-cuda}; PY=${PYTHON:-python3}
W=$(mktemp -d); t0=$(date +%s)
for p in code site; do tar -xzf "$PACK/$p.tar.gz" -C "$W"; done
"$PY" "$PACK/prune_site.py" "$W/site" || exit 1
echo "[throughput] unpacked in $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
IFS=";" read -ra specs <<< "${SPECS:-tiny 256 0;tiny 256 6;tiny 1024 6;tiny-64 256 6}"
cd benchmarks
for spec in "${specs[@]}"; do
  set -- $spec
  PYTHONPATH="$R:$W/site" timeout $(( 120 + 30 * ${PROFILE_STEPS:-0} )) "$PY" train_throughput.py --device "$DEV" --presets "$1" --batch-size "$2" \
    --data-dir "$DATA" --num-objects 8 --views-per-object 4 --warmup-steps 3 --steps "${STEPS:-10}" \
    --loader-workers "${3:-0}" --target-rays "${4:-0}" --profile-steps "${PROFILE_STEPS:-0}" \
    --output-json "$OUT/tp-$1-$2-w${3:-0}$([ "${4:-0}" -gt 0 ] && echo "-r$4").json" 2>&1 \
    | grep -v "^\s*$" | tail -n "$([ "${PROFILE_STEPS:-0}" -gt 0 ] && echo 45 || echo 5)"
done
echo "[throughput] done in $(( $(date +%s) - t0 )) s"
