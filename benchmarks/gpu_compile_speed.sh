#!/usr/bin/env bash
# One short GPU run of benchmarks/compile_speed.py (under 4 minutes on an H200):
# batch 1024, CUDA graphs (mode="reduce-overhead") for every compiled variant, both sizes,
# without the two slow-to-compile torch.compile(ELBOModule) variants (their graph breaks
# are device-independent and measured on the CPU). Results are written after each size.
# Usage: bash benchmarks/gpu_compile_speed.sh OUT_DIR   (needs torch with CUDA, pyro-ppl,
# scikit-learn; numpyro is not used on a GPU)
set -euo pipefail
out="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$out"
export OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv || true
timeout 225 python benchmarks/compile_speed.py --device cuda --batch 1024 \
    --rounds 5 --steps 20 --warmup 3 \
    --skip "Trace_ELBO compiled,pyro_kl torch.compile(ELBOModule)" \
    --out "$out/compile_speed_cuda.json" 2>&1 | grep -v "^[WI][0-9]\{4\} " | tail -40
