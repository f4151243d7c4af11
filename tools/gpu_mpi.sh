#!/usr/bin/env bash
# On a 2-GPU machine (see ../shared/device/README.md; carry .whl with the mpi4py wheel:
# bash ../shared/device/fetch-wheels.sh mpi4py): training images/s of a model
# with 1 process (each GPU alone, both GPUs in one process) and with 2 MPI ranks, one GPU
# each, at the same batch per GPU. Logs go to $OUT (or ./out).
# Usage: source .whl/gpu-env.sh && bash tools/gpu_mpi.sh [model] [batch per GPU]
set -uo pipefail
out=${OUT:-out}; mkdir -p "$out"
model=${1:-cifar-cnn}; batch=${2:-512}
# The GPU machine has Open MPI (what the mpi4py wheel loads there); its mpirun wants these as
# root, and no binding, so that each rank's host thread and PoCL are not pinned to one core.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
launch="/usr/bin/mpirun --bind-to none -x PATH -x PYTHONPATH -n 2"
[ -x /usr/bin/mpirun ] || launch="mpiexec -n 2"
echo "launcher: $launch"
HETCL_DEBUG=0 python3 -m hetcl bench --devices gpu --model "$model" --batch-size "$batch" \
    --steps 40 2>&1 | tee "$out/bench-1proc-$model.txt"
for mode in thread nonblocking; do  # the two ways of overlapping the rank sums (hetcl/parallel/mpi.py)
    echo "HETCL_MPI_ALLREDUCE=$mode"
    HETCL_MPI_ALLREDUCE=$mode HETCL_DEBUG=0 timeout 200 $launch -x HETCL_MPI_ALLREDUCE \
        "$(command -v python3)" -m hetcl bench --devices gpu --model "$model" \
        --batch-size "$batch" --steps 40 2>&1 | tee "$out/bench-2ranks-$mode-$model.txt"
done
