#!/usr/bin/env bash
# The two-stage pretraining recipe from scratch on a bare GPU worker, on a pack's dataset, within a time budget:
#   stage 1  NeRF only (--cdm.no-enabled), batch B1, stopped after S1 seconds (SIGINT: checkpoint + bundle);
#   stage 2  CDM only on the frozen stage-1 NeRF with the render cache, batch B2, S2 seconds, two variants side by
#            side on the one GPU: A the render-start [100, 250] recipe, B the same + --augment hflip channels.
# Run from the repository root:
#
#   OUT=/results S1=130 S2=240 bash scripts/gpu_worker/recipe.sh
#
# $OUT receives gpu-s1.tar.gz, gpu-A.tar.gz, gpu-B.tar.gz (bundle/, losses.jsonl, pretrain_config.json, run.log and
# pace.log: seconds since the start and steps done, every 10 s). PACK (default .gpu/pack), DEV, PYTHON as in run.sh;
# WORKERS: --loader-workers of each run (default 6; 0 builds batches in the training process, as on 2026-12-04).
# T1: stage 1's --target-rays (default 256: its NeRF loss over 256 random pixels per object, which on the CPU trained
# as well per step as every pixel at 2.6x the steps per second, benchmarks/README.md; 0 = every pixel, as on 2026-12-04).
set -u
export PYTHONUNBUFFERED=1
: "${OUT:?set OUT to the folder that should receive the results}"
PACK=${PACK:-.gpu/pack}; DEV=${DEV:-cuda}; PY=${PYTHON:-python3}
S1=${S1:-130}; S2=${S2:-240}; B1=${B1:-64}; B2=${B2:-128}; PAIRS=${PAIRS:-32}; WORKERS=${WORKERS:-6}
RES=$(mktemp -d); SCRATCH=$(mktemp -d); t0=$(date +%s)
pace() { while sleep 10; do n=0; [ -f "$1" ] && n=$(wc -l < "$1"); echo "$(( $(date +%s) - t0 )) $n"; done; }
echo "[recipe] stage 1: NeRF only, batch $B1, ${T1:-256} target rays per object (0 = all), ${S1} s"
mkdir -p "$RES/s1"; pace "$SCRATCH/s1/run/losses.jsonl" > "$RES/s1/pace.log" & P=$!
TIME_LIMIT=$S1 OUT=$RES/s1 WORK=$SCRATCH/s1 PYTHON=$PY bash "$PACK/run.sh" --preset tiny --device "$DEV" \
  --cdm.no-enabled --target-rays "${T1:-256}" --steps 1000000 --batch-size "$B1" --loader-workers "$WORKERS" --steps-per-checkpoint 1000 --steps-per-eval 1000 \
  --num-eval-objects 8 > "$RES/s1/run.log" 2>&1
kill $P; grep -E "worker\]|val PSNR|interrupted|Error" "$RES/s1/run.log" | tail -n 8
[ -f "$RES/s1/bundle/config.json" ] || { echo "[recipe] no stage-1 bundle"; tail -n 30 "$RES/s1/run.log"; exit 1; }
COMMON="--preset tiny --device $DEV --init-from $RES/s1/bundle --freeze-nerf --render-cache-pairs $PAIRS
  --steps 1000000 --batch-size $B2 --loader-workers $WORKERS --cdm.learning-rate 0.0003 --cdm.timestep-sampling band
  --cdm.render-start-prob 0.5 --cdm.render-start-min-t 100 --seed 3 --steps-per-checkpoint 1000 --steps-per-eval 0"
echo "[recipe] stage 2: CDM only, batch $B2, ${S2} s, A and B side by side ($(( $(date +%s) - t0 )) s)"
for v in A B; do
  mkdir -p "$RES/$v"; extra=""; [ $v = B ] && extra="--augment hflip channels"
  ( pace "$SCRATCH/$v/run/losses.jsonl" > "$RES/$v/pace.log" & P=$!
    TIME_LIMIT=$S2 OUT=$RES/$v WORK=$SCRATCH/$v PYTHON=$PY bash "$PACK/run.sh" $COMMON $extra > "$RES/$v/run.log" 2>&1
    kill $P ) &
done
wait
for v in A B; do echo "--- $v"; grep -E "worker\]|cache:|interrupted|Error" "$RES/$v/run.log" | tail -n 4; done
for d in s1 A B; do (cd "$RES" && tar -czf "$OUT/gpu-$d.tar.gz" "$d"); done
echo "[recipe] done in $(( $(date +%s) - t0 )) s"
