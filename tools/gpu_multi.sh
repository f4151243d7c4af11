#!/usr/bin/env bash
# On a multi-GPU machine (see ../shared/device/README.md): where the time of a two-GPU step
# goes (tools/profile_step.py), training images/s of a model on each GPU alone and on all of
# them together (the scheduler's split and messages are printed), the first GPU with the CPU
# beside it (pass "cpu" as the third argument; with tools/profile_gap.py), and the
# multi-device tests on the GPUs.
# Logs go to $OUT (or ./out).
# Usage: source .whl/gpu-env.sh && bash tools/gpu_multi.sh [model] [batch] [cpu]
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"
model=${1:-cifar-cnn}; batch=${2:-512}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 tools/profile_step.py --devices gpu --model "$model" --batch-size "$batch" --steps 30 \
    2>&1 | tail -5 | tee "$out/profile-$model-$batch.txt"
HETCL_DEBUG=0 python3 -m hetcl bench --devices gpu --model "$model" --batch-size "$batch" \
    --steps 60 --rounds 3 2>&1 | tee "$out/bench-$model-$batch.txt"
if [ "${3:-}" = cpu ]; then
    # Host-bound LeNet-5 steps swing 10-25% from second to second: many short windows.
    HETCL_DEBUG=0 python3 -m hetcl bench --devices 0,cpu --model lenet5 --model cifar-cnn \
        --steps 10 --rounds 8 2>&1 | tee "$out/bench-gpu-cpu.txt"
    # What the two-device runtime costs the GPU's host-bound LeNet-5 step, in one process.
    python3 tools/profile_gap.py --devices 0,cpu --model lenet5 --rounds 6 2>&1 | tail -5 \
        | tee "$out/gap-lenet5.txt"
fi
HETCL_TEST_DEVICES=gpu timeout 300 python3 -m pytest -q -p no:cacheprovider \
    tests/test_multidevice.py > "$out/tests-multidevice.txt" 2>&1
tail -3 "$out/tests-multidevice.txt"
