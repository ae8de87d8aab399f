#!/usr/bin/env bash
# One device session on one GPU, prepared to run in a single call (about 9 minutes on an H200, 16 cores):
#
#   1. install the project on the device's own Python and torch (pip install --no-deps -e .; the
#      packages its image lacks come as wheels in .whl/, made here beforehand with "wheels" below);
#   2. render the paper-scale data set in the background (gqnbench.presets' paper-short: 12,000 scenes);
#   3. the CUDA tests (tests/test_cuda.py: training in every precision, the fast path against fp64,
#      CUDA-graph capture, GPU memory in every cost case, the CUDA phase attribution);
#   4. perf-targets of both models at batch 36: fp32 (TF32) eager, bf16 eager, bf16 fast path, interleaved
#      with the fp32 / TF32 / bf16 matmul peaks; MFU, GPU memory, bf16 numerics, the targets;
#   5. the paper-scale learning runs of both models side by side (two processes, one GPU), their
#      steps sized from step 4's fast-path step times, then their sample predictions;
#   6. the profile of the bf16 step of both models (phases on the device timeline, memory);
#   7. the same matrix at batch 8 (fp32 and bf16, plain and fast path, interleaved, both models);
#   8. the nightly GPU gate on the paper preset (ci/nightly.py run), and a baseline pinned from it;
#   9. the fast path's ablation at batch 36: everything on, nothing on, and each switch off alone;
#  10. the report rebuilt from reports/example/results with this session's results in it.
# The stages run in that order of priority: when time runs short, the last ones are cut.
#
# Every stage has a time limit (and the session one overall); a failed or stopped stage is recorded
# and the next one runs. Results go to reports/example/results/gpu/ (read by the example report) and
# logs, the nightly run, its baseline, the JUnit file and the rebuilt report to reports/example/gpu-session/;
# with $OUT set (the device tool's output folder) both are packed into $OUT/gpu_session.tar.gz, next to
# session.log and session_stages.tsv. Unpack it in reports/example/ and rebuild the report there.
#
#   bash ci/gpu_session.sh wheels      # HERE, before the device call: the wheels the device image lacks
#   bash ci/gpu_session.sh             # ON THE DEVICE (the tool's run, carrying .whl; timeout about 570 s)
#
# Environment: GPU_SESSION_DEVICE (cuda; cpu runs the same plumbing on the CPU), GPU_SESSION_SIZE (full,
# or tiny: tiny presets and budgets, for checking the script on a CPU; its results never go to
# reports/example), GPU_SESSION_ROOT (where results/gpu and gpu-session go; default reports/example),
# GPU_SESSION_BUDGET (seconds for everything, default 540; tiny 3 x that), PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

if [[ "${1:-}" == "wheels" ]]; then
  # The packages the device image does not have (its list: .library/device/KINDS.md), at the versions
  # installed here, as cp312 manylinux wheels; the device tool carries .whl when the call names it.
  mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  for name in pydantic pydantic-core annotated-types typing-inspection typing-extensions crc32c tfrecord; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$name==$version" \
      || "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$name"
  done
  ls -l .whl
  exit 0
fi

DEVICE="${GPU_SESSION_DEVICE:-cuda}"
SIZE="${GPU_SESSION_SIZE:-full}"
BUDGET="${GPU_SESSION_BUDGET:-540}"
[[ "${GPU_SESSION_SIZE:-full}" == tiny ]] && BUDGET="${GPU_SESSION_BUDGET:-1620}"
if [[ "$SIZE" == tiny ]]; then
  ROOT="${GPU_SESSION_ROOT:-/tmp/gqnbench-gpu-session}"
else
  ROOT="${GPU_SESSION_ROOT:-reports/example}"
fi
RESULTS="$ROOT/results/gpu"
SESSION="$ROOT/gpu-session"
rm -rf "$RESULTS" "$SESSION"
mkdir -p "$RESULTS" "$SESSION/logs"
LOG="$SESSION/session.log"
STAGES="$SESSION/session_stages.tsv"
printf 'stage\texit\tseconds\tlimit_s\n' > "$STAGES"
START=$(date +%s)
export PYTHONUNBUFFERED=1 GQNBENCH_CACHE="${GQNBENCH_CACHE:-/tmp/gqnbench-cache}"

log() { printf '[%s +%4ds] %s\n' "$(date -u +%H:%M:%S)" "$(( $(date +%s) - START ))" "$*" | tee -a "$LOG"; }

# stage NAME LIMIT_S RESERVE_S FUNCTION: run FUNCTION (a bash function of this script) in a child bash under
# `timeout`, for at most LIMIT_S seconds and never into the last RESERVE_S seconds of the session. The tiny
# CPU check multiplies both by LIMIT_SCALE: process starts dominate there, not the GPU work.
stage() {
  local name=$1 limit=$(( $2 * LIMIT_SCALE )) reserve=$(( $3 * LIMIT_SCALE )) fn=$4
  local left=$(( BUDGET - ($(date +%s) - START) - reserve ))
  (( left < limit )) && limit=$left
  if (( limit < 5 )); then
    log "== $name: skipped, the session's time is spent"
    printf '%s\tskipped\t0\t%s\n' "$name" "$limit" >> "$STAGES"
    return
  fi
  log "== $name (limit ${limit} s)"
  local t0 rc
  t0=$(date +%s)
  timeout -k 10 "$limit" bash -c "$(declare -f "$fn"); $fn" > "$SESSION/logs/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$limit" >> "$STAGES"
  if (( rc == 0 )); then
    log "   $name: done in $(( $(date +%s) - t0 )) s"
  else
    log "   $name: FAILED (exit $rc$( (( rc == 124 || rc == 137 )) && echo ', time limit') ) after $(( $(date +%s) - t0 )) s; last lines:"
    tail -n 8 "$SESSION/logs/$name.log" | sed 's/^/      /' | tee -a "$LOG"
  fi
}

# --- sizes: the full session on the GPU, or its plumbing at tiny sizes -----------------------------------------
LIMIT_SCALE=1
if [[ "$SIZE" == tiny ]]; then
  LIMIT_SCALE=3
  PRESET=tiny BATCH=4 SMALL_BATCH=2 ROUNDS=2 WARMUP=1 MATMUL_N=256 TRAIN_S=20 STEP_CAP=20 MIN_STEPS=10
  # The paper-short recipe at tiny sizes (as tests/test_paper_short.py runs it).
  LEARN_SET=(--set model.image_size=16 --set data.image_size=16 --set model.hidden_channels=8
             --set model.r_channels=16 --set model.num_layers=2 --set gqn.z_channels=2 --set metagqn.z_channels=4
             --set train.batch_size=4 --set data.val_scenes=4 --set data.generate_scenes=40
             --set data.num_workers=0)
  NIGHTLY=(--quick --skip report)
else
  PRESET=paper BATCH=36 SMALL_BATCH=8 ROUNDS=10 WARMUP=3 MATMUL_N=8192 TRAIN_S=110 STEP_CAP=8000 MIN_STEPS=500
  LEARN_SET=()
  NIGHTLY=(--quick --preset paper --train-preset tiny --train-steps 30 --skip report)
fi
export DEVICE SIZE PRESET BATCH SMALL_BATCH ROUNDS WARMUP MATMUL_N TRAIN_S STEP_CAP MIN_STEPS ROOT RESULTS SESSION PY
export LEARN_SET_STR="${LEARN_SET[*]:-}" NIGHTLY_STR="${NIGHTLY[*]}"

log "gqnbench device session: device $DEVICE, sizes $SIZE, budget ${BUDGET} s, results in $RESULTS"
if [[ "$DEVICE" == cuda* ]]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader | tee -a "$LOG"
fi
log "$(nproc) cores, $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}') memory, $("$PY" --version 2>&1)"

# --- 1. install -------------------------------------------------------------------------------------------------
if [[ -d .whl ]] && compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >> "$LOG" 2>&1 && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
install() {
  # The device's own torch stays; nothing comes from the network (no build isolation: setuptools is there).
  $PY -m pip install -q --no-deps -e . || $PY -m pip install -q --no-deps --no-build-isolation -e .
  $PY -c "import gqnbench, torch, pydantic; print('gqnbench', gqnbench.__version__, 'torch', torch.__version__,
          'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
}
stage install 40 470 install
if ! "$PY" -c "import gqnbench" 2>/dev/null; then
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  log "   gqnbench is not installed; running it from the source tree (PYTHONPATH)"
fi
cat "$SESSION/logs/install.log" >> "$LOG"

# --- 2. the paper-scale data set, rendered in the background while the tests run -------------------------------
data() {
  # shellcheck disable=SC2086
  nice -n 10 $PY - $LEARN_SET_STR <<'EOF'
import sys
from gqnbench.config import parse_override_strings
from gqnbench.presets import get_preset
from gqnbench.training.data_source import load_training_data

pairs = [sys.argv[i + 1] for i in range(1, len(sys.argv) - 1, 2) if sys.argv[i] == "--set"]
preset = get_preset("paper-short", parse_override_strings(pairs))
data = load_training_data(preset.data, progress=False)  # renders into $GQNBENCH_CACHE and decodes it once
print(f"{len(data.train_scenes)} training scenes at {preset.data.image_size}px in {data.root}")
EOF
}
log "== data: rendering the paper-short data set in the background"
( t0=$(date +%s); timeout -k 10 300 bash -c "$(declare -f data); data" > "$SESSION/logs/data.log" 2>&1; rc=$?
  printf 'data\t%s\t%s\t300\n' "$rc" "$(( $(date +%s) - t0 ))" >> "$STAGES" ) &
DATA_PID=$!

# --- 3. the CUDA tests ------------------------------------------------------------------------------------------
cuda_tests() {
  $PY -m pytest -q tests/test_cuda.py -p no:cacheprovider -o addopts="" --junitxml="$SESSION/cuda_tests.xml"
}
stage cuda_tests 75 380 cuda_tests
# The fast path the rest of the session uses: everything, unless the tests found the CUDA graph or the
# fused cells wrong on this machine (then without them; recorded in fast_path.txt).
FAST=$("$PY" - "$SESSION/cuda_tests.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
    failed = {c.get("name", "") for c in cases if c.find("failure") is not None or c.find("error") is not None}
except (OSError, ET.ParseError):
    failed = set()
spec = "auto"
if any("captured" in n or "host_sync_in_the_core" in n for n in failed):
    spec += ",-cuda_graph"
if any("fast_path_matches_fp64" in n for n in failed):
    spec = "channels_last,cudnn_benchmark,tf32"
print(spec)
EOF
)
[[ "$DEVICE" != cuda* ]] && FAST=auto
echo "$FAST" > "$SESSION/fast_path.txt"
export FAST
log "   fast path for the rest of the session: $FAST"

# --- 4. perf-targets: the paper step of both models, fp32 eager / bf16 eager / bf16 fast path ----------------
perf() {
  for model in gqn metagqn; do
    $PY -m gqnbench perf-targets --device "$DEVICE" --preset "$PRESET" --model "$model" --batch "$BATCH" \
      --fast-path "$FAST" --no-compile --rounds "$ROUNDS" --warmup "$WARMUP" --matmul-n "$MATMUL_N" \
      --out "$RESULTS/perf_targets_${model}_b${BATCH}.json" || echo "perf-targets $model failed"
  done
}
stage perf 80 290 perf

# --- 5. the paper-scale learning runs, side by side -----------------------------------------------------------
learn() {
  # Steps for TRAIN_S seconds of the slower model side by side with the other (both processes share the GPU,
  # and evaluation takes its share), from step 4's bf16 fast-path step at the recipe's batch.
  steps=$($PY - "$RESULTS" "$BATCH" "$TRAIN_S" "$STEP_CAP" "$MIN_STEPS" <<'EOF'
import glob, json, sys
results, batch, seconds, cap, floor = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
fast = [
    row["median_s"]
    for path in glob.glob(f"{results}/perf_targets_*_b{batch}.json")
    for row in json.load(open(path))["perf_targets"]["bf16"]
    if row["fast_path"]["spec"] != "off"
]
slowest = max(fast) if fast else 0.1  # not measured: the plain eager step's order of magnitude
print(max(floor, min(cap, int(seconds / (2.2 * slowest)))))
EOF
)
  echo "training $steps steps per model (the recipe's schedules compressed to them)"
  wait_for_data
  pids=()
  for model in gqn metagqn; do
    # shellcheck disable=SC2086
    $PY -m gqnbench train --model "$model" --preset paper-short --compress-to "$steps" --tag gpu \
      --max-seconds "$(( TRAIN_S + 15 ))" --out "$RESULTS/train" --no-progress \
      --set train.device="$DEVICE" --set train.fast_path="$FAST" --set train.tensorboard=false $LEARN_SET_STR \
      > "$SESSION/logs/train-$model.log" 2>&1 &
    pids+=($!)
  done
  rc=0
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  tail -n 2 "$SESSION"/logs/train-*.log
  # shellcheck disable=SC2086
  $PY -m gqnbench samples "$RESULTS"/train/runs/gqn-gpu-seed0.pt "$RESULTS"/train/runs/metagqn-gpu-seed0.pt \
    --preset paper-short --set train.device="$DEVICE" $LEARN_SET_STR --out "$RESULTS/samples.json" || rc=1
  return $rc
}
wait_for_data() {
  while [[ ! -s "$SESSION/logs/data.log" ]] || ! grep -q "training scenes" "$SESSION/logs/data.log"; do
    grep -q -i "error" "$SESSION/logs/data.log" 2>/dev/null && { echo "data set failed"; return 1; }
    sleep 2
  done
  tail -n 1 "$SESSION/logs/data.log"
}
export -f wait_for_data
# The limit leaves room for each process's start (data, first evaluation, compile, capture) and its samples.
stage learn $(( TRAIN_S + 75 )) 120 learn
wait "$DATA_PID" 2>/dev/null

# --- 6. where the time goes: the bf16 step of both models on the device timeline ------------------------------
profile() {
  for model in gqn metagqn; do
    $PY -m gqnbench profile --device "$DEVICE" --preset "$PRESET" --model "$model" --dtype bf16 \
      --fast-path "channels_last,cudnn_benchmark,tf32" --steps 3 --warmup 2 --plain-rounds 2 --top-k 15 \
      --matmul-n "$MATMUL_N" --no-memory-timeline --gzip --out "$RESULTS/profile" \
      --results "$RESULTS/profile/profile_$model.json" || echo "profile $model failed"
  done
}
stage profile 40 100 profile

# --- 7. the matrix at a small batch: fp32 and bf16, plain and fast path, interleaved ------------------------------
small_batch() {
  $PY -m gqnbench throughput --device "$DEVICE" --preset "$PRESET" --models gqn metagqn --modes train \
    --batch "$SMALL_BATCH" --dtypes fp32 bf16 --fast-path off "$FAST" --interleave --rounds "$ROUNDS" \
    --warmup "$WARMUP" --matmul-n "$MATMUL_N" --out "$RESULTS/throughput_b${SMALL_BATCH}.json"
}
stage small_batch 30 80 small_batch

# --- 8. the nightly GPU gate on the paper preset, and a baseline pinned from it --------------------------------
nightly() {
  # shellcheck disable=SC2086
  $PY ci/nightly.py run --device "${DEVICE%%:*}" --out "$SESSION/nightly" $NIGHTLY_STR --step-timeout 60
  echo "nightly run exit $? (3: no pinned baseline yet for this device)"
  $PY ci/nightly.py baseline --from "$SESSION/nightly" --out "$SESSION/nightly/baseline.json"
}
stage nightly 90 25 nightly

# --- 9. the fast path's ablation: each switch off alone, against everything and nothing -------------------------
ablation() {
  for model in gqn metagqn; do
    $PY -m gqnbench throughput --device "$DEVICE" --preset "$PRESET" --models "$model" --modes train \
      --batch "$BATCH" --dtypes bf16 --interleave --rounds "$ROUNDS" --warmup "$WARMUP" --matmul-n "$MATMUL_N" \
      --fast-path off auto auto,-channels_last auto,-cudnn_benchmark auto,-fused_cell auto,-cuda_graph \
      auto,-fused_adam --out "$RESULTS/ablation_${model}_b${BATCH}.json" || echo "ablation $model failed"
  done
}
stage ablation 50 20 ablation

# --- 10. the report, rebuilt with this session's results -----------------------------------------------------------
report() {
  $PY -m gqnbench.report "$ROOT/results" --out "$SESSION/report"
}
stage report 20 0 report

# --- pack what comes back ----------------------------------------------------------------------------------------
log "session done in $(( $(date +%s) - START )) s; stages:"
(column -t -s $'\t' "$STAGES" 2>/dev/null || cat "$STAGES") | sed 's/^/   /' | tee -a "$LOG"
if [[ -n "${OUT:-}" ]]; then
  exclude=(--exclude='*.pt' --exclude='*.ckpt' --exclude='checkpoints' --exclude='tensorboard' --exclude='*.lock')
  tar -czf "$OUT/gpu_session.tar.gz" -C "$ROOT" "${exclude[@]}" results/gpu gpu-session
  if (( $(stat -c %s "$OUT/gpu_session.tar.gz") > 15 * 1024 * 1024 )); then  # the tool's limit is 16 MiB a file
    tar -czf "$OUT/gpu_session.tar.gz" -C "$ROOT" "${exclude[@]}" --exclude='*.pt.trace.json*' \
      --exclude='memory_snapshot.pickle' results/gpu gpu-session
    log "traces left out: the packed session was over 15 MiB"
  fi
  cp "$LOG" "$STAGES" "$OUT/"
  log "packed into \$OUT/gpu_session.tar.gz ($(stat -c %s "$OUT/gpu_session.tar.gz") bytes)"
fi
