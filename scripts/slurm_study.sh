#!/usr/bin/env bash
# The study (benchmark.py study) on a SLURM cluster: a job array with one model per task, each
# task on its own GPUs, then a report job that runs once every task has ended well
# (--dependency=afterok) and writes OUTPUT/study.{md,csv,json,png}, the same files as a study
# run in one process.
#
# Run it on the login node (not with sbatch); the arguments are benchmark.py study's:
#   bash scripts/slurm_study.sh -p $CITYSCAPES_DATASET --models pidnet ddrnet bisenetv2 \
#       --output-dir runs/study
#   STUDY_SBATCH="--gpus-per-task=2 --time=48:00:00" bash scripts/slurm_study.sh -p ... (per task)
#   bash scripts/slurm_study.sh --synthetic --models fastscnn bisenetv2 --no-corruptions
# It first runs `benchmark.py study ARGS --list` here (the models in order; a --synthetic tree is
# generated once, before the tasks start), then submits:
#   - the array: task I runs `benchmark.py study ARGS --task I` (model I: train, evaluate,
#     export, time; no report). The #SBATCH lines below are its defaults (1 GPU, 8 CPUs, 48 h);
#     STUDY_SBATCH adds sbatch options that override them (split on spaces).
#   - the report: `benchmark.py study ARGS --report-only` after all tasks ended with status 0
#     (REPORT_SBATCH adds options to this job; it needs no GPU).
# It prints both job ids. A task that fails or is cancelled leaves the report job pending for
# ever (afterok cannot be met; `scancel` it) and its model's finished stages in place: run this
# script again with the same arguments and only the missing stages run (train.py continues from
# its last checkpoint). Outputs go to OUTPUT (--output-dir, default runs/benchmark), job logs to
# OUTPUT/slurm-study-%A_%a.out and OUTPUT/slurm-study-report-%j.out; OUTPUT and the data must be
# on storage every node can reach. PYTHON is the interpreter (default .venv/bin/python).
#
#SBATCH --job-name=segbench-study
#SBATCH --ntasks=1
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00

set -uo pipefail

die() {
    echo "error: $*" >&2
    exit 2
}

export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export PYTHONUNBUFFERED=1 # job logs line by line
PYTHON="${PYTHON:-.venv/bin/python}"

role="submit"
case "${1:-}" in
--study-task) role="task" && shift ;;
--study-report) role="report" && shift ;;
esac

if [[ "$role" != "submit" ]]; then # inside a job
    cd "${SLURM_SUBMIT_DIR:-.}" || die "cannot enter the submit folder ${SLURM_SUBMIT_DIR:-.}"
    echo "slurm_study: job ${SLURM_JOB_ID:-?} (${role}${SLURM_ARRAY_TASK_ID:+ ${SLURM_ARRAY_TASK_ID}}) on $(hostname -s) at $(date '+%F %T')"
    if [[ "$role" == "task" ]]; then
        [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]] || die "--study-task runs as a task of the job array"
        exec "$PYTHON" benchmark.py study "$@" --task "$SLURM_ARRAY_TASK_ID"
    fi
    exec "$PYTHON" benchmark.py study "$@" --report-only
fi

[[ -z "${SLURM_JOB_ID:-}" ]] \
    || die "run this script on the login node: bash scripts/slurm_study.sh [study options]; it submits the jobs itself"
command -v sbatch >/dev/null 2>&1 || die "sbatch not found: run this on a SLURM login node"
cd "$(dirname "$0")/.." || die "cannot enter the repository root"
[[ -x "$PYTHON" ]] || command -v "$PYTHON" >/dev/null 2>&1 \
    || die "PYTHON=$PYTHON is not an executable (install the suite, or set PYTHON)"

# the output folder: the last --output-dir of the arguments (benchmark.py's default otherwise)
out_dir="runs/benchmark"
for ((i = 1; i <= $#; i++)); do
    case "${!i}" in
    --output-dir=*) out_dir="${!i#--output-dir=}" ;;
    --output-dir) j=$((i + 1)) && ((j <= $#)) && out_dir="${!j}" ;;
    --task | --task=* | --report-only | --list) die "${!i} is set by this script; leave it out" ;;
    esac
done

models="$("$PYTHON" benchmark.py study "$@" --list)" || exit $?
count="$(grep -c . <<<"$models")"
((count > 0)) || die "the study has no models"
mkdir -p "$out_dir" || die "cannot create the output folder $out_dir"

# shellcheck disable=SC2206  # the variables hold several options, split on spaces on purpose
task_opts=(${STUDY_SBATCH:-})
# shellcheck disable=SC2206
report_opts=(${REPORT_SBATCH:-})
array="$(sbatch --parsable --array="0-$((count - 1))" -o "$out_dir/slurm-study-%A_%a.out" \
    "${task_opts[@]}" "$0" --study-task "$@")" || die "sbatch of the study's job array failed"
array="${array%%;*}"
report="$(sbatch --parsable --job-name=segbench-study-report --dependency="afterok:$array" \
    --ntasks=1 --cpus-per-task=1 --gpus-per-task=0 --time=1:00:00 \
    -o "$out_dir/slurm-study-report-%j.out" "${report_opts[@]}" "$0" --study-report "$@")" \
    || { scancel "$array"; die "sbatch of the report job failed (the array $array is cancelled)"; }
report="${report%%;*}"

echo "slurm_study: job array $array: $count models, one per task:"
i=0
while read -r model; do
    echo "  task $i: $model"
    i=$((i + 1))
done <<<"$models"
echo "slurm_study: report job $report after all of them (afterok): $out_dir/study.{md,csv,json,png}"
echo "slurm_study: logs in $out_dir/slurm-study-*.out; watch with: squeue -j $array,$report"
