#!/usr/bin/env bash
# On the GPU machine (see ../shared/device/README.md): batch norm, dropout and resnet20 there.
#   1. the new kernels' tests on the NVIDIA device (batch norm, dropout, average pooling)
#   2. resnet20 trained on Fashion-MNIST by hetcl and, from the same initial weights on the same
#      batches with the same schedule, by PyTorch (tools/torch_recipe.py), side by side: test
#      accuracy (their images/s are not comparable here: both share the GPU)
#   3. tools/cudnn_compare.py for resnet20: its layers and batch norms against cuDNN, and the
#      training step against PyTorch eager FP32 (TF32 off) and TF32
# The data set travels in .data/fashion-mnist (carry it). Logs go to $OUT (or ./out).
# Usage: source .whl/gpu-env.sh && bash tools/gpu_resnet20.sh EPOCHS
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"
epochs=${1:-15}
recipe=(--model resnet20 --epochs "$epochs" --batch-size 128 --data .data/fashion-mnist)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
HETCL_TEST_DEVICES=gpu timeout 60 python3 -m pytest -q -p no:cacheprovider -x \
    tests/test_batchnorm_kernels.py tests/test_dropout_kernels.py tests/test_avgpool.py \
    > "$out/tests.txt" 2>&1
tail -3 "$out/tests.txt"
timeout 200 python3 -m hetcl train "${recipe[@]}" --devices gpu \
    --log "$out/hetcl_train.jsonl" > "$out/hetcl_train.txt" 2>&1 &
timeout 200 python3 tools/torch_recipe.py "${recipe[@]}" --device cuda \
    > "$out/torch_train.txt" 2>&1 &
wait
tail -n 4 "$out/hetcl_train.txt" "$out/torch_train.txt"
timeout 110 python3 tools/cudnn_compare.py --device gpu --models resnet20 --gemm-sizes "" \
    --batch 128 --out "$out/cudnn_resnet20.md" --png "$out/cudnn_resnet20.png" \
    > "$out/cudnn.txt" 2>&1
tail -40 "$out/cudnn_resnet20.md"
