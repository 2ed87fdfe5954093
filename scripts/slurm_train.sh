#!/usr/bin/env bash
# Training under SLURM with tf.distribute.MultiWorkerMirroredStrategy (train.py --distribute
# multiworker): srun starts one train.py per task; each reads the cluster from SLURM through
# SlurmClusterResolver (SLURM_PROCID, SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE,
# SLURM_STEP_NUM_TASKS). Task 0 is the chief and alone writes checkpoints and logs, so OUTPUT
# must be on storage every node can reach. The global batch is BATCH x replicas (one replica per
# GPU, or per task on CPUs).
#
# The #SBATCH lines below are defaults; options on the sbatch command line override them:
#   sbatch scripts/slurm_train.sh                                  2 nodes x 1 task x 4 GPUs
#   sbatch -N 1 --gpus-per-node=8 scripts/slurm_train.sh           one node with 8 GPUs
#   sbatch -N1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0 scripts/slurm_train.sh
#                                                                  CPU-only: 2 workers, 1 CPU each
#   sbatch --time=2:00:00 -o my-%j.out scripts/slurm_train.sh
# One task per node drives all GPUs of its node; with --ntasks-per-node=N and --gpus-per-node=G,
# SLURM hands each task its share of the node's GPUs.
#
# train.py's options: the env vars MODEL, BATCH (per replica), EPOCHS, CITYSCAPES_DATASET,
# OUTPUT, PYTHON (the interpreter) and EXTRA (more options, split on spaces), and any arguments
# after the script's name, passed to train.py unchanged (they come last, so they win):
#   MODEL=deeplabv3+ sbatch scripts/slurm_train.sh -t 128,256 --mixed-precision
# Options with commas must go as arguments: `sbatch --export=ALL,EXTRA="-t 128,256"` cannot work,
# SLURM splits --export on commas (EXTRA exported in the shell before sbatch does keep them).
#
# Preemption and the time limit: SLURM sends SIGTERM to the tasks 120 s before the time limit
# (--signal=TERM@120), and at preemption or on `scancel --signal=TERM --full`. train.py then
# finishes its current step, saves the training state of that step (OUTPUT/preempted.state/)
# and exits with status 75 (training.preemption.PREEMPTED_EXIT_CODE). This shell survives the
# SIGTERM (it waits for srun) and, when srun ends with 75 or the state was saved during this job
# (srun --kill-on-bad-exit may end a task that is still shutting down, after the state was saved,
# when another task exited with 75 first), requeues the job (`scontrol requeue`, allowed by
# --requeue): the requeued job runs the same command, which continues from the saved step. Other
# failures end the job with their own status. Set the output folder with OUTPUT (or
# --output-dir among the arguments), so that this script finds the saved state.
# Resume by hand: submit the same command again (same OUTPUT); -r RUN/last.weights.h5 continues
# another folder's run in a new OUTPUT.
#
#SBATCH --job-name=segbench-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%x-%j.out
#SBATCH --open-mode=append
#SBATCH --signal=TERM@120
#SBATCH --requeue

set -uo pipefail

PREEMPTED=75 # training.preemption.PREEMPTED_EXIT_CODE
STARTED="$(date +%s)"

die() {
    echo "error: $*" >&2
    exit 2
}

[[ -n "${SLURM_JOB_ID:-}" ]] \
    || die "not inside a SLURM job; submit with: sbatch scripts/slurm_train.sh [train.py options]"

MODEL="${MODEL:-fastscnn}"
BATCH="${BATCH:-4}"                       # per replica
EPOCHS="${EPOCHS:-1000}"
DATA="${CITYSCAPES_DATASET:-}"
[[ -n "$DATA" ]] || die "CITYSCAPES_DATASET is not set; export it (the Cityscapes root) before sbatch"
OUTPUT="${OUTPUT:-runs/${MODEL}-slurm}"
EXTRA="${EXTRA:-}"
# Workers listen on this port (+1 for a second task on the same node, ...); pick a free range.
export SEGBENCH_PORT_BASE="${SEGBENCH_PORT_BASE:-$((20000 + SLURM_JOB_ID % 20000))}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export PYTHONUNBUFFERED=1                 # job logs line by line

cd "${SLURM_SUBMIT_DIR:-.}" || die "cannot enter the submit folder ${SLURM_SUBMIT_DIR:-.}"
PYTHON="${PYTHON:-.venv/bin/python}"
[[ -x "$PYTHON" ]] || command -v "$PYTHON" >/dev/null 2>&1 \
    || die "PYTHON=$PYTHON is not an executable (run sbatch from the repository root or set PYTHON)"

# shellcheck disable=SC2206  # EXTRA holds several options, split on spaces on purpose
extra=($EXTRA)
cmd=("$PYTHON" train.py -m "$MODEL" -p "$DATA" -b "$BATCH" -e "$EPOCHS"
    --distribute multiworker --output-dir "$OUTPUT" "${extra[@]}" "$@")

# the output folder train.py will use: OUTPUT, or the last --output-dir of the arguments
out_dir="$OUTPUT"
for ((i = 1; i <= $#; i++)); do
    case "${!i}" in
    --output-dir=*) out_dir="${!i#--output-dir=}" ;;
    --output-dir) j=$((i + 1)) && ((j <= $#)) && out_dir="${!j}" ;;
    esac
done
saved_now() { # the training state was saved by this job (after it started)
    local meta="$out_dir/preempted.state/meta.json"
    [[ -f "$meta" ]] && (($(stat -c %Y "$meta") >= STARTED))
}

nodes="${SLURM_JOB_NUM_NODES:-1}"
tasks="${SLURM_NTASKS:-$nodes}"
per_node="${SLURM_NTASKS_PER_NODE:-$((tasks / nodes))}"
gpus_node="${SLURM_GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-0}}"
gpus_node="${gpus_node##*:}"              # "a100:4" -> 4
[[ "$gpus_node" =~ ^[0-9]+$ ]] || gpus_node=0
per_node="${per_node%%(*}"                # "2(x3)" -> 2
[[ "$per_node" =~ ^[0-9]+$ && "$per_node" -gt 0 ]] || per_node=1
gpus_task=$((gpus_node / per_node))
echo "slurm_train: job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname -s) at $(date '+%F %T')"
echo "slurm_train: nodes ${nodes} (${SLURM_JOB_NODELIST:-?}), tasks ${tasks} (${per_node} per node), GPUs per task ${gpus_task}$( ((gpus_task)) || echo ' (CPU only)'), port base ${SEGBENCH_PORT_BASE}"
echo "slurm_train: command: $(printf '%q ' "${cmd[@]}")"

# `scancel --signal=TERM --full` (and a preemption that signals the whole job) sends SIGTERM to
# this shell and its children. srun answers SIGTERM with "forcing job termination" and SIGKILLs
# the tasks (Slurm 22.05 has no srun --ignore-signals), so srun runs outside this shell's process
# tree (setsid, double fork: out of reach of proctrack/linuxproc's signal; on proctrack/cgroup
# clusters srun stays in the batch cgroup and a --full SIGTERM still kills the tasks). This shell
# traps the SIGTERM and passes it on to the job's steps (`scancel --signal=TERM`, steps only),
# whose tasks save their state; the time-limit signal (--signal=TERM@120) reaches the tasks
# directly. srun's exit status comes back through a file.
run_dir="$(mktemp -d "${TMPDIR:-/tmp}/slurm_train.${SLURM_JOB_ID}.XXXXXX")" \
    || die "cannot create a temporary folder in ${TMPDIR:-/tmp}"
trap 'rm -rf "$run_dir"' EXIT
got_term=0
on_term() {
    got_term=1
    echo "slurm_train: SIGTERM: passing it to the tasks and waiting for them to save their state"
    scancel --signal=TERM "$SLURM_JOB_ID" || echo "slurm_train: scancel --signal=TERM $SLURM_JOB_ID failed" >&2
}
trap on_term TERM
(
    setsid bash -c 'echo $$ >"$0/pid"; srun --kill-on-bad-exit=1 "$@"; echo $? >"$0/status.tmp"
        mv "$0/status.tmp" "$0/status"' "$run_dir" "${cmd[@]}" &
)
status=""
for ((t = 0; ; t++)); do
    if [[ -s "$run_dir/status" ]]; then
        status="$(cat "$run_dir/status")"
        break
    fi
    if ((t > 20)) && ! { [[ -s "$run_dir/pid" ]] && kill -0 "$(cat "$run_dir/pid")" 2>/dev/null; }; then
        [[ -s "$run_dir/status" ]] && continue
        echo "error: srun's launcher ended without an exit status (killed?)" >&2
        status=1
        break
    fi
    sleep 0.5 &
    wait $! 2>/dev/null                  # a trap runs at once, not after the sleep
done

job_state="$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -n1)"
if ((status != 0 && status != PREEMPTED)) && saved_now; then
    echo "slurm_train: srun ended with status ${status}, but the training state was saved at $(date -r "$out_dir/preempted.state/meta.json" '+%T') after SIGTERM: treated as ${PREEMPTED}"
    status=$PREEMPTED
fi
if ((status == PREEMPTED)) && [[ "$job_state" != "JobState=RUNNING" ]]; then
    # a plain `scancel` (the job is CANCELLED/COMPLETING): the state is saved, do not requeue
    echo "slurm_train: training stopped with its state saved (status ${PREEMPTED}); the job is ending (${job_state:-state unknown}), not requeued"
    exit "$PREEMPTED"
fi
if ((status == PREEMPTED)); then
    echo "slurm_train: training stopped with its state saved (status ${PREEMPTED}); requeueing job ${SLURM_JOB_ID}"
    if scontrol requeue "$SLURM_JOB_ID"; then
        exit 0
    fi
    echo "error: scontrol requeue ${SLURM_JOB_ID} failed; submit the same command again to continue" >&2
    exit "$PREEMPTED"
fi
if ((got_term && status != 0)); then
    echo "slurm_train: srun ended with status ${status} after SIGTERM (not ${PREEMPTED}: no state saved at the current step)" >&2
fi
echo "slurm_train: srun ended with status ${status} at $(date '+%F %T')"
exit "$status"
