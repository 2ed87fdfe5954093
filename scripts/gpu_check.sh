#!/usr/bin/env bash
# The GPU checks: everything the suite does on a GPU that a CPU machine cannot show, in one
# bounded run that writes its figures to one folder (default results/gpu_check).
#
#   bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--models a,b,...] [--size H,W]
#                             [--python PY] [--budget SECONDS]
#
# Steps (each one skipped, with the reason written down, when what it needs is missing; none of
# them is ever replaced by a made-up figure):
#   1. machine: nvidia-smi, driver, CUDA, and the versions of TensorFlow (and the GPUs it sees),
#      onnxruntime (its execution providers), TensorRT and CuPy             -> machine.txt
#   2. training on the GPU: train.py --synthetic, one short epoch, precise batch norm, under
#      --distribute auto (MirroredStrategy with several GPUs)                -> train.log
#   3. TensorRT: convert_to_onnx.py --trt for each model at --size (default 1024,2048), float32
#      and float16: the engine built with TensorRT's Python API, checked against onnxruntime,
#      timed as trtexec times (trtexec too where it is installed)           -> trt_<model>_<p>.log
#   4. the benchmark on every backend present (tf, onnxruntime, tensorrt)  -> benchmark.{md,csv,json}
#   5. summary.md: the lines of the logs above that hold the figures, with the machine.
#
# Needs the GPU side installed: pip install -r requirements-gpu.txt (TensorFlow with CUDA,
# onnxruntime-gpu, TensorRT's Python wheels, CuPy). --dry-run checks the plan and what is
# installed and prints the commands without running them (works on any machine).
# Every step has its own time limit (a share of --budget, default 540 s): a step that runs out
# is stopped and reported, and the next one runs (540 s fits the device tool's 10-minute command). Exit status: 0 when every step that could run
# passed, 1 when one failed, 2 for bad options.

set -uo pipefail

die() {
    echo "error: $*" >&2
    exit 2
}

DRY=0
OUT=results/gpu_check
MODELS=fastscnn,ddrnet
SIZE=1024,2048
PYTHON="${PYTHON:-.venv/bin/python}"
BUDGET=540
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
while (($#)); do
    case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="${2:?--out needs a folder}" && shift ;;
    --models) MODELS="${2:?--models needs a comma list}" && shift ;;
    --size) SIZE="${2:?--size needs H,W}" && shift ;;
    --python) PYTHON="${2:?--python needs an interpreter}" && shift ;;
    --budget) BUDGET="${2:?--budget needs seconds}" && shift ;;
    -h | --help)
        sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown option '$1'; see bash scripts/gpu_check.sh --help" ;;
    esac
    shift
done
[[ "$SIZE" =~ ^[0-9]+,[0-9]+$ ]] || die "--size takes H,W (e.g. 1024,2048), got '$SIZE'"
[[ "$BUDGET" =~ ^[0-9]+$ && "$BUDGET" -ge 60 ]] || die "--budget takes seconds >= 60, got '$BUDGET'"
[[ "$MODELS" =~ ^[a-z0-9_+,-]+$ ]] || die "--models takes a comma list of model names, got '$MODELS'"
cd "$(dirname "$0")/.." || die "cannot enter the repository root"
command -v "$PYTHON" >/dev/null 2>&1 || [[ -x "$PYTHON" ]] \
    || die "no Python at '$PYTHON'; create .venv (see README) or pass --python"

IFS=, read -r -a models <<<"$MODELS"
steps=$((2 + 2 * ${#models[@]} + 1))
share=$((BUDGET / steps))
status=0
mkdir -p "$OUT" || die "cannot create $OUT"
: >"$OUT/steps.txt"

note() { echo "$*" | tee -a "$OUT/steps.txt"; }

# has WHAT: a Python import that works with $PYTHON
has() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }

# step NAME LOG SECONDS COMMAND...: run (or, with --dry-run, print) one bounded step
step() {
    local name="$1" log="$2" limit="$3"
    shift 3
    if ((DRY)); then
        note "would run [$name] (limit ${limit} s): $*"
        return 0
    fi
    note "running [$name] (limit ${limit} s): $*"
    local started=$SECONDS code
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$log" 2>&1
    code=$?
    if ((code == 0)); then
        note "  [$name] passed in $((SECONDS - started)) s"
    elif ((code == 124 || code == 137)); then
        note "  [$name] stopped at its ${limit} s limit (see $log)"
        status=1
    else
        note "  [$name] failed with status $code (see $log): $(grep -m1 '^error:' "$OUT/$log")"
        status=1
    fi
}

skip() { note "skipped [$1]: $2"; }

# 1. the machine
{
    echo "gpu_check at $(date -u '+%F %T') UTC on $(hostname -s)"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    else
        echo "nvidia-smi: not available (no NVIDIA driver here)"
    fi
    "$PYTHON" - <<'EOF' 2>&1
import importlib, platform
print("python", platform.python_version(), platform.machine())
for name in ("tensorflow", "onnxruntime", "tensorrt", "cupy", "openvino"):
    try:
        module = importlib.import_module(name)
        extra = ""
        if name == "tensorflow":
            extra = f", GPUs {[d.name for d in module.config.list_physical_devices('GPU')]}"
        if name == "onnxruntime":
            extra = f", providers {module.get_available_providers()}"
        print(f"{name} {module.__version__}{extra}")
    except Exception as exc:  # a missing or broken package is a line of the report
        print(f"{name}: not usable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
EOF
} >"$OUT/machine.txt"
note "machine: $(sed -n 2p "$OUT/machine.txt"); $(grep -E '^(tensorflow|tensorrt)' "$OUT/machine.txt" | tr '\n' ';')"

gpu_tf=0
grep -q "^tensorflow .*GPUs \['/physical_device:GPU" "$OUT/machine.txt" && gpu_tf=1
trt=0
grep -q "^tensorrt [0-9]" "$OUT/machine.txt" && has cupy && trt=1

# 2. training on the GPU
if ((gpu_tf || DRY)); then
    step train train.log "$share" "$PYTHON" train.py -m fastscnn --synthetic -t 512,1024 -b 4 \
        -e 1 --steps-per-epoch 20 --precise-bn 64 --output-dir "$OUT/train_run"
else
    skip train "TensorFlow sees no GPU here (machine.txt)"
fi

# 3. TensorRT engines
for model in "${models[@]}"; do
    for precision in fp32 fp16; do
        flag=()
        [[ "$precision" == fp16 ]] && flag=(--precision fp16)
        name="trt_${model//+/plus}_${precision}"
        if ((trt || DRY)); then
            step "$name" "$name.log" "$share" "$PYTHON" convert_to_onnx.py -m "$model" -t "$SIZE" \
                --nchw "${flag[@]}" --trt -o "$OUT/onnx/${name}.onnx"
        else
            skip "$name" "TensorRT's Python package or CuPy is not installed (machine.txt)"
        fi
    done
done

# 4. the benchmark on every backend present
backends=tf,onnxruntime
((trt)) && backends="$backends,tensorrt"
if ((gpu_tf || DRY)); then
    step benchmark benchmark.log "$share" "$PYTHON" benchmark.py --models "${models[@]}" \
        --sizes "$SIZE" --backends "$backends" --budget $((share - 30)) --output-dir "$OUT"
else
    skip benchmark "TensorFlow sees no GPU here: the CPU benchmark is benchmark.py itself"
fi

# 5. the summary
if ((!DRY)); then
    {
        echo "# GPU check"
        echo
        echo "Command: \`bash scripts/gpu_check.sh --models $MODELS --size $SIZE --budget $BUDGET\`"
        echo
        echo '```'
        cat "$OUT/machine.txt"
        echo '```'
        echo
        echo "## Steps"
        echo
        sed 's/^/- /' "$OUT/steps.txt"
        echo
        echo "## Figures"
        echo
        for log in "$OUT"/*.log; do
            [[ -f "$log" ]] || continue
            echo "### $(basename "$log")"
            echo '```'
            grep -E "TensorRT|trtexec|images/s|epoch [0-9]+/|replicas|error:" "$log" | head -n 20
            echo '```'
        done
    } >"$OUT/summary.md"
    note "wrote $OUT/summary.md"
fi
exit "$status"
