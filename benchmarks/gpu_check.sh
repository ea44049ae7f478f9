#!/usr/bin/env bash
# The GPU check: tests, benchmarks and a train + eval run on one CUDA GPU, every result as JSON under OUT.
#   bash benchmarks/gpu_check.sh OUT              # on the GPU machine (about 6 minutes on an H100)
#   bash benchmarks/gpu_check.sh OUT --quick      # at most 4 minutes: the CUDA tests and the two goal rows
#   bash benchmarks/gpu_check.sh OUT --dry-run    # anywhere: the plan and every check that needs no GPU
# Installs nothing from the network: taylorat editable with --no-deps, missing packages from .whl/ (--wheels DIR).
set -uo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
