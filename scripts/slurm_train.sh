#!/usr/bin/env bash
# Multi-node training with tf.distribute.MultiWorkerMirroredStrategy under SLURM.
#
# One task per node; each task drives all GPUs of its node (MirroredStrategy inside the worker),
# so the global batch is --batch x GPUs per node x nodes. train.py reads the cluster from SLURM
# through SlurmClusterResolver (SLURM_PROCID, SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE,
# SLURM_STEP_NUM_TASKS); task 0 is the chief and alone writes checkpoints and logs, so
# --output-dir must be on storage every node can reach.
#
# Submit:   sbatch scripts/slurm_train.sh                      (defaults below)
#           MODEL=deeplabv3+ EXTRA="--backbone xception --mixed-precision" sbatch -N 4 scripts/slurm_train.sh
# Resume:   submit the same command again: the run continues from its last completed epoch.
#
#SBATCH --job-name=segbench-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%x-%j.out

set -euo pipefail

MODEL="${MODEL:-fastscnn}"
BATCH="${BATCH:-4}"                       # per GPU
EPOCHS="${EPOCHS:-1000}"
DATA="${CITYSCAPES_DATASET:?set CITYSCAPES_DATASET to the Cityscapes root}"
OUTPUT="${OUTPUT:-runs/${MODEL}-slurm}"
EXTRA="${EXTRA:-}"
# Workers listen on this port (+1 for a second task on the same node); pick a free one.
export SEGBENCH_PORT_BASE="${SEGBENCH_PORT_BASE:-$((20000 + SLURM_JOB_ID % 20000))}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
PYTHON="${PYTHON:-.venv/bin/python}"

echo "nodes: ${SLURM_JOB_NODELIST}  tasks: ${SLURM_NTASKS}  port base: ${SEGBENCH_PORT_BASE}"
# shellcheck disable=SC2086  # EXTRA holds several options on purpose
srun --kill-on-bad-exit=1 "${PYTHON}" train.py \
    -m "${MODEL}" -p "${DATA}" -b "${BATCH}" -e "${EPOCHS}" \
    --distribute multiworker --output-dir "${OUTPUT}" ${EXTRA}
