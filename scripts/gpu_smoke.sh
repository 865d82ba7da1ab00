#!/usr/bin/env bash
# GPU smoke test: the default stream with COMM (tuned) on one GPU, then under torchrun on every visible GPU, each
# checked against a CPU run; prints throughput (samples/s of extraction and of training) and peak GPU memory.
# A few minutes on one GPU. Usage: bash scripts/gpu_smoke.sh [OUT] (PRESET=ci DEVICE=cpu dry-runs it on a CPU).
set -euo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
out=${1:-runs/gpu_smoke}
preset=${PRESET:-default}
device=${DEVICE:-cuda}
tolerance=${TOLERANCE:-0.02}  # avg_acc; mixed precision (bf16) and other kernels move the last digits
rm -rf "$out" && mkdir -p "$out"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
# 1. one process on one device, cold cache: extraction, pretraining and training timed
python scripts/gpu_smoke.py single "$out" "$preset" "$device"
# 2. every visible GPU under torchrun (two CPU processes on gloo for a dry run), cold cache of its own
gpus=$(python -c "import torch; print(max(torch.cuda.device_count(), 1) if '$device' != 'cpu' else 2)")
start=$(date +%s)
torchrun --nproc_per_node="$gpus" --master_addr=127.0.0.1 --master_port=29517 -m mmcl_lab.cli run \
  --preset "$preset" --tuned --out "$out/ddp_$gpus" method.name=comm train.device="$device" train.progress=false \
  data.cache_dir="$out/cache_ddp" | tail -3
echo "torchrun on $gpus processes: $(( $(date +%s) - start )) s, extraction and pretraining included"
# 3. the CPU reference, from the single run's cached features
mmcl-lab run --preset "$preset" --tuned --out "$out/cpu" method.name=comm train.device=cpu train.progress=false \
  data.cache_dir="$out/cache_single" | tail -1
python scripts/gpu_smoke.py check "$out" "$tolerance"
