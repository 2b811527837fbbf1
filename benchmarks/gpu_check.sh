#!/usr/bin/env bash
# The GPU figures of the speed issue in one run, for a lent CUDA machine (H100/H200), about 5 minutes:
#   bash benchmarks/gpu_check.sh            (figures as JSON under $OUT, or ./gpu_figures without it)
# SD 2.1-size one-step pipeline (random weights, OSEDiff's LoRA layout, merged), 512² tiles:
# bf16 at tile batches 1-8 with the reference-style peer loop, fp16 (fp32 VAE: no NaN), torch.compile,
# and GPU memory at 1024² vs 4096² output; then lite in bf16.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_figures}"
mkdir -p "$out"
python -c "import sr_cli" 2>/dev/null || python -m pip install -q -e . >/dev/null
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv | tee "$out/gpu.txt"
bench() { python -m sr_cli.bench "$@"; }
bench --model sd21 --size 512 --dtype bf16 --sweep-tile-batch 1 --sweep-tile-batch 2 --sweep-tile-batch 4 --sweep-tile-batch 8 --peer --json "$out/sd21_bf16.json"
bench --model sd21 --size 512 --dtype fp16 --tile-batch 4 --json "$out/sd21_fp16.json"
bench --model sd21 --size 512 --dtype bf16 --tile-batch 4 --compile --json "$out/sd21_bf16_compile.json"
bench --model sd21 --dtype bf16 --tile-batch 4 --memory-scaling --scaling-sizes 256 1024 --no-flops \
  --json "$out/sd21_memory.json"
bench --model lite --size 1024 --dtype bf16 --json "$out/lite_bf16.json"
