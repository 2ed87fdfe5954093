"""One (model, runtime) measurement: its typed spec, the job that any runtime runs, the child process.

Each measurement runs in a fresh child process so that its peak memory is its own. This is
one of the project's two deliberate subprocess boundaries: `run_job_subprocess` writes a
`JobSpec` as JSON and runs `python -m bench.jobs SPEC.json RESULT.json`, whose `_main` reads
the spec back, calls `run_job` and writes the outcome as JSON. The child resets the kernel's
resident-set high-water mark (/proc/self/clear_refs) once the model is loaded and reads VmHWM
after the timed loop. The child opens the model with the runtime the registry names
(`inference.runtimes`): an onnxruntime child imports only onnxruntime, onnx and numpy; a runtime
checked against a reference (OpenVINO, TensorRT) imports the reference after its timed loop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from inference.timing import (
    MIN_DURATION_S,
    MIN_ITERS,
    WARMUP_S,
    TimingResult,
    loop_overhead_s,
    time_callable,
)
from utils.errors import BadInput
from utils.machine import available_cores, current_rss_mb, peak_rss_mb, reset_peak_rss


@dataclasses.dataclass
class JobSpec:
    """What one measurement times and how; it crosses the process boundary as JSON.

    The timing fields default to inference.timing's WARMUP_S, MIN_ITERS and MIN_DURATION_S.
    """

    #: The runtime: a name of inference.runtimes.RUNTIMES.
    backend: str
    #: Input height, width and batch of the timed call.
    height: int
    width: int
    batch_size: int
    #: Registered model name (tf/xla build it in the child); a label for ONNX backends.
    model: str = "job"
    #: Builder options (e.g. backbone).
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: One of inference.runtimes.PRECISIONS.
    precision: str = "fp32"
    #: The exported model (the runtimes that open an ONNX file or an engine built from one).
    onnx_path: str | None = None
    #: nhwc or nchw: the layout of the ONNX file's input.
    layout: str = "nhwc"
    warmup_s: float = WARMUP_S
    min_iters: int = MIN_ITERS
    min_duration_s: float = MIN_DURATION_S
    #: Seconds the job may take from its start (None: no limit).
    budget_s: float | None = None
    #: onnxruntime intra-op threads and OpenVINO's INFERENCE_NUM_THREADS (None: every core
    #: this process may use).
    threads: int | None = None
    #: onnxruntime execution providers to ask for (None: CUDA when installed, then CPU); the
    #: job fails when the session runs on fewer than it asked for. Only for onnxruntime.
    providers: list[str] | None = None
    #: Run onnxruntime's profiler for `profile_iters` more calls after the timed loop.
    profile: bool = False
    profile_iters: int = 2
    #: Where the child writes its outcome (set by run_job_subprocess); profiles go beside it.
    result_path: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        """A spec from its JSON form; ValueError naming any unknown field."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"job spec fields are {', '.join(sorted(names))}; got {unknown!r}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return dataclasses.asdict(self)

    def timing_args(self, start: float) -> dict[str, Any]:
        """time_callable keyword arguments (the budget counts from `start`)."""
        return {
            "warmup_s": float(self.warmup_s),
            "min_iters": int(self.min_iters),
            "min_duration_s": float(self.min_duration_s),
            "deadline": None if self.budget_s is None else start + float(self.budget_s),
        }


# --------------------------------------------------------------------------- shared pieces


def _input_array(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Generated float32 images in [0, 255] (the models' input contract)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8).astype(np.float32)


def _slice_onnx(shape: tuple[int, ...]) -> bytes:
    """An ONNX graph that reads one element of an input of `shape`: the cost of feeding it."""
    # ONNX libraries only on the paths that run them
    import onnx
    from onnx import TensorProto, helper

    def const(name: str, values: list[int]) -> Any:
        return helper.make_node(
            "Constant",
            [],
            [name],
            value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values),
        )

    nodes = [
        const("starts", [0, 0, 0, 0]),
        const("ends", [1, 1, 1, 1]),
        helper.make_node("Slice", ["input", "starts", "ends"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "feed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _finish(
    result: TimingResult, spec: JobSpec, feed_s: float, loop_s: float, extra: dict[str, Any]
) -> dict[str, Any]:
    """The JSON-ready outcome of a timed job."""
    stats = result.stats()
    batch = int(spec.batch_size)
    overhead_s = feed_s + loop_s
    return {
        "status": "ok",
        **stats,
        "iterations": result.iterations,
        "warmup_iters": result.warmup_iters,
        "warmup_s": result.warmup_s,
        "timed_s": result.total_s,
        "budget_limited": result.budget_limited,
        # From the median: one slow call among many (another process, a page fault) must not
        # pull the throughput down, as it does the mean.
        "images_per_s": 1e3 * batch / stats["median_ms"],
        "feed_overhead_ms": feed_s * 1e3,
        "loop_overhead_ms": loop_s * 1e3,
        "overhead_pct": 100.0 * overhead_s / (stats["mean_ms"] / 1e3),
        "times_ms": [t * 1e3 for t in result.times_s],
        **extra,
    }


def _profile_summary(path: str, top: int = 12) -> dict[str, Any]:
    """Aggregate an onnxruntime profile (Chrome trace JSON) by op type and by node."""
    events = json.loads(Path(path).read_text())
    by_type: dict[str, float] = {}
    by_node: dict[str, list[Any]] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        op_type = args.get("op_name", "?")
        dur_ms = float(event.get("dur", 0)) / 1e3
        by_type[op_type] = by_type.get(op_type, 0.0) + dur_ms
        node = event["name"][: -len("_kernel_time")]
        entry = by_node.setdefault(node, [op_type, 0.0, args.get("provider", "")])
        entry[1] += dur_ms
    total = sum(by_type.values()) or 1.0
    types = sorted(by_type.items(), key=lambda kv: -kv[1])
    nodes = sorted(by_node.items(), key=lambda kv: -kv[1][1])[:top]
    return {
        "total_kernel_ms": total,
        "by_op_type": [{"op": k, "ms": v, "pct": 100 * v / total} for k, v in types],
        "top_nodes": [
            {"node": k, "op": v[0], "ms": v[1], "pct": 100 * v[1] / total, "provider": v[2]}
            for k, v in nodes
        ],
    }


# --------------------------------------------------------------------------- the job


def _open(spec: JobSpec, x: np.ndarray, workdir: Path) -> tuple[Any, Any]:
    """(the runtime of the job, the same runtime on a graph that only reads one element of the
    input: the cost of feeding it), each opened from what the registry says it takes."""
    from inference import runtimes

    source = runtimes.entry(spec.backend).source
    threads = int(spec.threads or available_cores())
    options = {"providers": list(spec.providers)} if spec.providers is not None else {}
    if source == "keras":
        # TensorFlow and Keras in this child only: an onnxruntime child stays light
        import keras

        from inference.runtimes.tf_runtime import POLICIES
        from models import build_model

        keras.mixed_precision.set_global_policy(POLICIES[spec.precision])
        model = build_model(spec.model, (int(spec.height), int(spec.width), 3), **spec.options)
        inputs = keras.Input(x.shape[1:], batch_size=len(x))
        probe = keras.Model(inputs, inputs[:, :1, :1, :1])
        return (
            runtimes.open_runtime(spec.backend, model, threads, spec.precision),
            runtimes.open_runtime(spec.backend, probe, threads, spec.precision),
        )
    probe_onnx = workdir / f"{Path(spec.result_path or 'job').stem}_feed.onnx"
    probe_onnx.write_bytes(_slice_onnx(x.shape))
    model_file, probe_file, extra = Path(str(spec.onnx_path)), probe_onnx, {}
    if source == "engine":
        # deploy builds an engine from the ONNX file for this GPU and TensorRT version
        from deploy.graph import summarize_onnx
        from deploy.tensorrt import build_engine

        model_file = build_engine(spec.onnx_path, workdir / "job.engine", spec.precision).path
        probe_file = build_engine(probe_onnx, workdir / "feed.engine", "fp32").path
        extra = {"batch": int(spec.batch_size), "metadata": summarize_onnx(spec.onnx_path).metadata}
    runtime = runtimes.open_runtime(
        spec.backend, model_file, threads, spec.precision, **options, **extra
    )
    probe = runtimes.open_runtime(
        spec.backend, probe_file, threads, None if source == "engine" else "fp32", **options,
        **({"batch": int(spec.batch_size)} if source == "engine" else {}),
    )  # fmt: skip
    return runtime, probe


def _parity(spec: JobSpec, runtime: Any, x: np.ndarray) -> dict[str, Any]:
    """The runtime's output on the timed input against its reference runtime's (onnxruntime on
    the CPU), for the parent to judge by the parity rule; {} for a reference runtime."""
    from inference import runtimes
    from inference.parity import compare

    reference = runtimes.entry(spec.backend).reference
    if reference is None:
        return {}
    threads = int(spec.threads or available_cores())
    expected = runtimes.open_runtime(
        reference, spec.onnx_path, threads, providers=["CPUExecutionProvider"]
    ).run(x)
    parity = compare(runtime.run(x), expected)
    return {
        "parity_reference": f"{runtimes.title(reference)} CPUExecutionProvider",
        "parity_max_abs_diff": parity.max_abs_diff,
        "parity_agreement": parity.agreement,
        "parity_logit_scale": parity.logit_scale,
        "parity_precision": runtime.precision,
    }


def _parts(result: TimingResult) -> dict[str, Any]:
    """A TensorRT job's parts (copy in, GPU compute, copy out) in milliseconds: the compute
    statistics apart from the copies, as trtexec reports its GPU Compute Time."""
    if not result.parts_s:
        return {}
    parts = np.asarray(result.parts_s, np.float64) * 1e3
    return {
        "compute_median_ms": float(np.median(parts[:, 1])),
        "compute_p90_ms": float(np.percentile(parts[:, 1], 90)),
        "copy_in_ms": float(np.median(parts[:, 0])),
        "copy_out_ms": float(np.median(parts[:, 2])),
    }


def run_job(spec: JobSpec, workdir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run one measurement described by `spec` in this process; returns its JSON outcome.

    Opens the model with the runtime the registry names (`inference.runtimes`), times its call
    on one batch of generated images with the timing loop (`inference.timing`), the memory of
    the timed calls alone, the cost of feeding the input, and, for a runtime checked against a
    reference, the parity figures on the timed input.
    """
    from inference import runtimes

    start = time.perf_counter()
    why = runtimes.available(spec.backend)
    if why is not None:
        raise BadInput(f"runtime {spec.backend} cannot run here: {why}")
    workdir = Path(workdir or Path(spec.result_path or ".").parent)
    x = _input_array(int(spec.batch_size), int(spec.height), int(spec.width))
    runtime, probe = _open(spec, x, workdir)
    call, probe_call = runtime.bind(x), probe.bind(x)
    setup_peak = peak_rss_mb()
    reset = reset_peak_rss()
    baseline = current_rss_mb()
    result = time_callable(call, **spec.timing_args(start))
    peak = peak_rss_mb()
    feed = time_callable(probe_call, warmup_s=0.05, min_iters=20, min_duration_s=0.2)
    described = runtime.describe()
    extra = {
        "providers": described["providers"],
        "runtime_version": described["runtime_version"],
        "threads": described["threads"],
        "device": described.get("device") or ",".join(described["providers"]),
        "policy": described.get("policy"),
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "setup_peak_rss_mb": setup_peak,
        "peak_rss_reset": reset,
        **_parts(result),
        **_parity(spec, runtime, x),
    }
    if spec.profile and runtimes.entry(spec.backend).profiler:
        prefix = str(workdir / f"{Path(spec.result_path or 'job').stem}_ortprof")
        profile = runtime.profile(x, int(spec.profile_iters), prefix)
        extra["profile"] = _profile_summary(profile)
        Path(profile).unlink(missing_ok=True)
    feed_s = float(np.median(feed.times_s))
    return _finish(result, spec, feed_s, loop_overhead_s(), extra)


# --------------------------------------------------------------------------- one job per process


def run_job_subprocess(
    spec: JobSpec | Mapping[str, Any],
    workdir: str | os.PathLike,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Run `run_job(spec)` in a fresh Python process; its failure becomes a status message.

    Args:
        spec: the job (a JobSpec or its JSON form).
        workdir: folder for the spec and result files (and profiles, trtexec times).
        timeout_s: kill the child after this many seconds (None: no limit).
    """
    if not isinstance(spec, JobSpec):
        spec = JobSpec.from_dict(spec)
    workdir = Path(workdir)
    tag = f"{spec.model}_{spec.backend}_{time.monotonic_ns()}".replace("+", "p")
    spec_path = workdir / f"{tag}_spec.json"
    result_path = workdir / f"{tag}_result.json"
    spec = dataclasses.replace(spec, result_path=str(result_path))
    spec_path.write_text(json.dumps(spec.to_dict()))
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.jobs", str(spec_path), str(result_path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {"status": f"error: timed out after {timeout_s:.0f} s"}
    if result_path.exists():
        return json.loads(result_path.read_text())
    lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else f"exit status {proc.returncode}"
    if proc.returncode < 0 or proc.returncode == 137:
        last = f"killed (signal {-proc.returncode if proc.returncode < 0 else 9}; out of memory?)"
    return {"status": f"error: {last}"}


def _main(argv: list[str]) -> int:
    """Child entry point: run the job in argv[0] (JSON spec) and write argv[1] (JSON result)."""
    if len(argv) != 2:
        print("usage: python -m bench.jobs SPEC.json RESULT.json", file=sys.stderr)
        return 2
    try:
        outcome = run_job(JobSpec.from_dict(json.loads(Path(argv[0]).read_text())))
    except BadInput as exc:  # what the user can fix, in the row's status
        outcome = {"status": f"error: {exc}"}
    except Exception as exc:  # a bug: its traceback on stderr, its type and message in the row
        traceback.print_exc()
        outcome = {"status": f"error (a bug, traceback in the log): {type(exc).__name__}: {exc}"}
    tmp = Path(argv[1] + ".tmp")
    tmp.write_text(json.dumps(outcome))
    os.replace(tmp, argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
