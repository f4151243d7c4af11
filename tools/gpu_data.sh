#!/usr/bin/env bash
# On the GPU machine (see ../shared/device/README.md): the data path there.
#   1. the gather/augmentation and streaming tests on the NVIDIA device
#   2. tools/bench_streaming.py, twice: lenet5 images/s and the host's CPU time per step with
#      resident data, streamed data (forced over the data budget: in chunks, in chunks of one
#      step, each step its own upload) and resident data with flip-crop, alternating windows in
#      one process, the GPU to itself
#   3. tools/bench_evaluate.py: evaluation with the logits read in flight vs waited for
#   4. then resnet20 on Fashion-MNIST trained twice at once, --augment none and flip-crop, same
#      recipe and epochs: the test accuracy each reaches (their images/s share the GPU)
# The data set travels in .data/fashion-mnist (carry it). Logs go to $OUT (or ./out).
# Usage: source .whl/gpu-env.sh && bash tools/gpu_data.sh EPOCHS
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"
epochs=${1:-15}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
HETCL_TEST_DEVICES=gpu timeout 90 python3 -m pytest -q -p no:cacheprovider -x \
    tests/test_gather.py tests/test_gather_augment.py tests/test_streaming.py \
    > "$out/tests.txt" 2>&1
tail -3 "$out/tests.txt"
for run in 1 2; do  # twice: a LeNet-5 step on a GPU is host-bound, and the host is noisy
    timeout 150 python3 tools/bench_streaming.py --devices gpu --model lenet5 --batch 256 \
        --rounds 9 > "$out/streaming$run.md" 2>&1
    cat "$out/streaming$run.md"
done
timeout 60 python3 tools/bench_evaluate.py --devices gpu --model lenet5 > "$out/evaluate.txt" 2>&1
cat "$out/evaluate.txt"
recipe=(--model resnet20 --epochs "$epochs" --batch-size 128 --data .data/fashion-mnist
        --devices gpu)
for aug in none flip-crop; do
    timeout 330 python3 -m hetcl train "${recipe[@]}" --augment "$aug" \
        --log "$out/resnet20_$aug.jsonl" > "$out/resnet20_$aug.txt" 2>&1 &
done
wait
tail -n 2 "$out"/resnet20_*.txt
