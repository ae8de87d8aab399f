#!/usr/bin/env bash
# Nightly GPU regression run: the pytest-benchmark matrix, a short fixed-seed training run and
# the report, checked against the pinned baseline ci/baselines/<gpu model>.json.
#
#   ci/nightly_gpu.sh [--quick] [any other "ci/nightly.py run" option]
#
# Environment: NIGHTLY_OUT (output folder; default results/nightly/<UTC time>), NIGHTLY_DEVICE
# (default cuda). Exit code is nightly.py's: 0 pass, 1 regression/failed step, 2 bad input,
# 3 no baseline for this GPU (the message says how to pin one).
set -uo pipefail
cd "$(dirname "$0")/.."

out="${NIGHTLY_OUT:-results/nightly/$(date -u +%Y%m%dT%H%M%SZ)}"
device="${NIGHTLY_DEVICE:-cuda}"
python="${PYTHON:-python}"

if [[ "$device" == cuda* ]] && ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "nightly_gpu.sh: --device $device but nvidia-smi is not on PATH (no NVIDIA driver?)" >&2
  exit 2
fi
if [[ "$device" == cuda* ]]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi

"$python" ci/nightly.py run --device "$device" --out "$out" "$@"
rc=$?
echo "nightly_gpu.sh: outputs in $out (verdict: $out/verdict.txt), exit $rc"
exit "$rc"
