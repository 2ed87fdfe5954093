"""One (model, backend) measurement: its typed spec, the per-backend runners, the child process.

Each measurement runs in a fresh child process so that its peak memory is its own. This is
one of the project's two deliberate subprocess boundaries: `run_job_subprocess` writes a
`JobSpec` as JSON and runs `python -m bench.jobs SPEC.json RESULT.json`, whose `_main` reads
the spec back, calls `run_job` and writes the outcome as JSON. The child resets the kernel's
resident-set high-water mark (/proc/self/clear_refs) once the model is loaded and reads VmHWM
after the timed loop. An onnxruntime child imports only onnxruntime, onnx and numpy; an
OpenVINO child imports openvino, and onnxruntime after its timed loop, for the parity check.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.timing import (
    MIN_DURATION_S,
    MIN_ITERS,
    WARMUP_S,
    TimingResult,
    loop_overhead_s,
    time_callable,
)
from utils.machine import available_cores, current_rss_mb, gpus, peak_rss_mb, reset_peak_rss

BACKENDS = ("tf", "xla", "onnxruntime", "openvino", "tensorrt")


@dataclasses.dataclass
class JobSpec:
    """What one measurement times and how; it crosses the process boundary as JSON.

    The timing fields default to bench.timing's WARMUP_S, MIN_ITERS and MIN_DURATION_S.
    """

    #: One of BACKENDS.
    backend: str
    #: Input height, width and batch of the timed call.
    height: int
    width: int
    batch_size: int
    #: Registered model name (tf/xla build it in the child); a label for ONNX backends.
    model: str = "job"
    #: Builder options (e.g. backbone).
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: fp32, fp16 or bf16.
    precision: str = "fp32"
    #: The exported model (onnxruntime, openvino and tensorrt).
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
    #: job fails when the session runs on fewer than it asked for.
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


# --------------------------------------------------------------------------- backends


def _onnxruntime_profile(
    spec: JobSpec, threads: int, providers: list[str], feeds: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Run onnxruntime's profiler for spec.profile_iters calls and summarise where time goes."""
    # ONNX libraries only on the paths that run them
    import onnxruntime as ort

    popts = ort.SessionOptions()
    popts.intra_op_num_threads = threads
    popts.enable_profiling = True
    popts.profile_file_prefix = str(Path(spec.result_path or "job").with_suffix("")) + "_ortprof"
    psess = ort.InferenceSession(spec.onnx_path, popts, providers=providers)
    for _ in range(int(spec.profile_iters)):
        psess.run(None, feeds)
    prof = psess.end_profiling()
    summary = _profile_summary(prof)
    Path(prof).unlink(missing_ok=True)
    return summary


def run_onnxruntime(spec: JobSpec) -> dict[str, Any]:
    """Time an exported ONNX model with onnxruntime (fp32; CUDA provider when installed)."""
    # ONNX libraries only on the paths that run them
    import onnxruntime as ort

    start = time.perf_counter()
    if spec.precision == "bf16":
        raise ValueError(
            "the onnxruntime backend runs float32 or float16 exports; for bf16 use "
            "tensorrt or tf/xla"
        )
    threads = int(spec.threads or available_cores())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = list(spec.providers or _default_providers(ort.get_available_providers()))
    sess = ort.InferenceSession(spec.onnx_path, opts, providers=providers)
    # numpy only: fails the job when onnxruntime fell back from a provider it was asked for
    from inference.onnx_backend import check_providers

    ran_on = check_providers(sess, providers)
    name = sess.get_inputs()[0].name
    x = _input_array(int(spec.batch_size), int(spec.height), int(spec.width))
    if spec.layout.lower() == "nchw":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    feeds = {name: x}
    feed_sess = ort.InferenceSession(_slice_onnx(x.shape), opts, providers=providers)
    setup_peak = peak_rss_mb()
    reset = reset_peak_rss()
    baseline = current_rss_mb()

    def call() -> None:
        sess.run(None, feeds)

    result = time_callable(call, **spec.timing_args(start))
    peak = peak_rss_mb()
    feed = time_callable(
        lambda: feed_sess.run(None, {"input": x}), warmup_s=0.05, min_iters=20, min_duration_s=0.2
    )
    extra = {
        "providers": ran_on,
        "runtime_version": ort.__version__,
        "threads": threads,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "setup_peak_rss_mb": setup_peak,
        "peak_rss_reset": reset,
    }
    if spec.profile:
        extra["profile"] = _onnxruntime_profile(spec, threads, providers, feeds)
    return _finish(result, spec, float(np.median(feed.times_s)), loop_overhead_s(), extra)


def _default_providers(available: list[str]) -> list[str]:
    """CUDA when this onnxruntime build offers it, then the CPU."""
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _onnxruntime_reference(spec: JobSpec, x: np.ndarray, threads: int) -> np.ndarray:
    """onnxruntime's CPU output on the NHWC input `x` (the parity reference of other runtimes)."""
    # ONNX libraries only on the paths that run them
    import onnxruntime as ort

    from inference.onnx_backend import check_providers, run_onnx

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    cpu = ["CPUExecutionProvider"]
    sess = ort.InferenceSession(spec.onnx_path, opts, providers=cpu)
    check_providers(sess, cpu)
    return run_onnx(sess, x)


def run_openvino(spec: JobSpec) -> dict[str, Any]:
    """Time an exported ONNX file with OpenVINO (latency hint, float32), check it against
    onnxruntime on the same input."""
    # numpy only at import; openvino is imported when the model is compiled
    from inference.openvino_backend import compare_outputs, openvino_model, run_openvino

    start = time.perf_counter()
    if spec.precision != "fp32":
        raise ValueError(
            f"the openvino backend runs float32 exports (INFERENCE_PRECISION_HINT f32); got "
            f"precision {spec.precision!r}: use fp32"
        )
    threads = int(spec.threads or available_cores())
    model = openvino_model(spec.onnx_path, threads=threads)
    x = _input_array(int(spec.batch_size), int(spec.height), int(spec.width))
    feed_x = np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if model.nchw else x
    request, output = model.request, model.compiled.outputs[0]
    slice_path = Path(str(Path(spec.result_path or "job").with_suffix("")) + "_feed.onnx")
    slice_path.write_bytes(_slice_onnx(feed_x.shape))
    feed_model = openvino_model(slice_path, threads=threads)
    slice_path.unlink(missing_ok=True)
    setup_peak = peak_rss_mb()
    reset = reset_peak_rss()
    baseline = current_rss_mb()

    def call() -> None:
        request.infer({0: feed_x})[output]

    result = time_callable(call, **spec.timing_args(start))
    peak = peak_rss_mb()
    feed = time_callable(
        lambda: feed_model.request.infer({0: feed_x}),
        warmup_s=0.05,
        min_iters=20,
        min_duration_s=0.2,
    )
    # Parity on the timed input, through run_openvino (the contract predict/evaluate use).
    parity = compare_outputs(run_openvino(model, x), _onnxruntime_reference(spec, x, threads))
    extra = {
        "providers": model.devices,
        "device": ",".join(model.devices),
        "policy": f"INFERENCE_PRECISION_HINT {model.inference_precision}",
        "runtime_version": importlib.metadata.version("openvino"),
        "threads": model.threads,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "setup_peak_rss_mb": setup_peak,
        "peak_rss_reset": reset,
        "parity_reference": "onnxruntime CPUExecutionProvider",
        "parity_max_abs_diff": parity.max_abs_diff,
        "parity_agreement": parity.agreement,
        "parity_logit_scale": parity.logit_scale,
        "parity_precision": model.metadata.get("precision", "float32"),
    }
    return _finish(result, spec, float(np.median(feed.times_s)), loop_overhead_s(), extra)


def run_tensorflow(spec: JobSpec) -> dict[str, Any]:
    """Build the model in this process and time it as a TF graph, with XLA when asked."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    # TensorFlow is imported here, in the tf/xla child only: an onnxruntime child stays light.
    import keras
    import tensorflow as tf

    # models imports Keras: only on the paths that build one
    from models import build_model

    policy = {"fp32": "float32", "fp16": "mixed_float16", "bf16": "mixed_bfloat16"}[spec.precision]
    keras.mixed_precision.set_global_policy(policy)
    model = build_model(spec.model, (int(spec.height), int(spec.width), 3), **spec.options)
    xla = spec.backend == "xla"
    forward = tf.function(lambda x: model(x, training=False), jit_compile=xla)
    feed_fn = tf.function(lambda x: x[:1, :1, :1, :1], jit_compile=xla)
    x = tf.constant(_input_array(int(spec.batch_size), int(spec.height), int(spec.width)))
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    sync = tf.test.experimental.sync_devices if has_gpu else None

    def call() -> None:
        forward(x)
        if sync is not None:
            sync()

    def feed_call() -> None:
        feed_fn(x)
        if sync is not None:
            sync()

    setup_peak = peak_rss_mb()
    reset = reset_peak_rss()
    baseline = current_rss_mb()
    result = time_callable(call, **spec.timing_args(start))
    peak = peak_rss_mb()
    feed = time_callable(feed_call, warmup_s=0.05, min_iters=20, min_duration_s=0.2)
    extra = {
        "device": "GPU" if has_gpu else "CPU",
        "policy": policy,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "setup_peak_rss_mb": setup_peak,
        "peak_rss_reset": reset,
    }
    return _finish(result, spec, float(np.median(feed.times_s)), loop_overhead_s(), extra)


def _find_trtexec() -> str | None:
    """Path of trtexec (the deploy package's finder)."""
    # Imported here: deploy.tensorrt loads the ONNX graph helpers, which only TensorRT needs.
    from deploy.tensorrt import find_trtexec

    return find_trtexec()


def trtexec_timing_command(spec: JobSpec, times_path: str) -> list[str]:
    """The trtexec command line that times a job (trtexec does its own warm-up and timing).

    Not deploy's trtexec_command, which builds and saves an engine for deployment.
    """
    cmd = [
        _find_trtexec() or "trtexec",
        f"--onnx={spec.onnx_path}",
        f"--warmUp={int(1000 * float(spec.warmup_s))}",
        f"--duration={max(1, round(float(spec.min_duration_s)))}",
        f"--iterations={int(spec.min_iters)}",
        "--avgRuns=1",
        f"--exportTimes={times_path}",
    ]
    if spec.precision == "fp16":
        cmd.append("--fp16")
    elif spec.precision == "bf16":
        cmd.append("--bf16")
    return cmd


def tensorrt_available() -> str | None:
    """Why TensorRT cannot run here, or None when trtexec and a GPU are present."""
    if _find_trtexec() is None:
        return "trtexec not found (install TensorRT; on a Jetson it is /usr/src/tensorrt/bin)"
    if not gpus() and not Path("/etc/nv_tegra_release").exists():
        return "no NVIDIA GPU found"
    return None


def run_tensorrt(spec: JobSpec) -> dict[str, Any]:
    """Build a TensorRT engine from the ONNX file and time it with trtexec."""
    why = tensorrt_available()
    if why is not None:
        raise RuntimeError(f"TensorRT unavailable: {why}")
    times_path = str(Path(spec.result_path or "job").with_suffix("")) + "_trt_times.json"
    cmd = trtexec_timing_command(spec, times_path)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"trtexec failed ({proc.returncode}): {' | '.join(tail)}")
    records = json.loads(Path(times_path).read_text())
    Path(times_path).unlink(missing_ok=True)
    # latencyMs: host-to-device copy + compute + device-to-host copy of one inference.
    times = [float(r["latencyMs"]) / 1e3 for r in records]
    result = TimingResult(
        times_s=times,
        warmup_iters=0,
        warmup_s=float(spec.warmup_s),
        budget_limited=False,
        min_iters=int(spec.min_iters),
        min_duration_s=float(spec.min_duration_s),
    )
    extra = {
        "trtexec": " ".join(cmd),
        "peak_rss_mb": None,
        "note": "trtexec latencyMs (H2D + compute + D2H); its own timing loop",
    }
    return _finish(result, spec, 0.0, 0.0, extra)


# --------------------------------------------------------------------------- one job per process


def run_job(spec: JobSpec) -> dict[str, Any]:
    """Run one measurement described by `spec` in this process; returns its JSON outcome."""
    if spec.backend == "onnxruntime":
        return run_onnxruntime(spec)
    if spec.backend == "openvino":
        return run_openvino(spec)
    if spec.backend in ("tf", "xla"):
        return run_tensorflow(spec)
    if spec.backend == "tensorrt":
        return run_tensorrt(spec)
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {spec.backend!r}")


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
    except Exception as exc:  # reported in the table rather than crashing the whole run
        outcome = {"status": f"error: {type(exc).__name__}: {exc}"}
    tmp = Path(argv[1] + ".tmp")
    tmp.write_text(json.dumps(outcome))
    os.replace(tmp, argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
