#!/usr/bin/env bash
# The cluster figures of BENCHMARKS.md on a lent GPU, prepared so that one call of the device tool does it
# all: `bash benchmarks/scripts/device_gpu_bench.sh` as the run's command, timeout_s 600. It needs only the
# working tree: the device image's python3 has torch, torchvision, numpy, pandas and pillow, and the
# benchmark imports nothing else (pypng is imported only by the writers of SYNTHIA-style labels).
# On a cluster node: OUT=some/folder bash benchmarks/scripts/device_gpu_bench.sh
set -uo pipefail
out="${OUT:-results/bench/gpu}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 - <<'PY' | tee "$out/card.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(),
      f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
PY
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >>"$out/card.txt" 2>&1
# the issue's bar: the whole benchmark in at most 8 minutes
SECONDS=0
timeout 480 python3 -m hiast bench gpu --output "$out/gpu_bench.json" >"$out/gpu_bench.log" 2>&1
echo "hiast bench gpu: exit $?, ${SECONDS} s with start-up" >>"$out/gpu_bench.log"
tail -n 25 "$out/gpu_bench.log"
# the CUDA-only tests (the IAS step on the device equals the CPU's) and the benchmark's own tests
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_pseudo.py tests/test_gpubench.py >"$out/cuda_tests.log" 2>&1
echo "CUDA tests: exit $?" >>"$out/cuda_tests.log"
tail -n 5 "$out/cuda_tests.log"
