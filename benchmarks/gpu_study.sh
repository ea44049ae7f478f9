#!/usr/bin/env bash
# The GPU study (configs/studies/fashion_mnist_gpu.yaml): one seed of TRADES and TRADES+1st+2nd per call.
#   bash benchmarks/gpu_study.sh --pack               # once, here: data + slim AutoAttack wheel -> .gpu_carry/
#   bash benchmarks/gpu_study.sh OUT --dry-run        # anywhere: next seed, epochs, the time estimate, the GPU command
#   bash benchmarks/gpu_study.sh OUT                  # on one CUDA GPU (about 8 minutes on an H100): results under OUT
#   bash benchmarks/gpu_study.sh OUT --tiny           # on CPU: the same path at toy size
# On the GPU machine (the working tree + .gpu_carry/ must stay under 64 MiB; --dry-run checks it), within 10 minutes:
#   bash benchmarks/gpu_study.sh "$OUT"
# Then copy OUT/results.json and OUT/README.md into docs/studies/fashion_mnist_gpu/. See benchmarks/gpu_study.py.
set -uo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" benchmarks/gpu_study.py "$@"
