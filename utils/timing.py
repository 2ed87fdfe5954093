"""Timing harness for the benchmarks: timed loops, latency statistics, matmul peak, machine facts.

Conventions follow NVIDIA trtexec: warm up for a time (at least one call), then time calls one
by one until both a minimum number of iterations and a minimum duration are reached. A budget
(deadline) may stop the loop earlier; the result then says so (`budget_limited`).

Each (model, backend) measurement runs in a fresh child process (`python -m utils.timing
SPEC.json RESULT.json`, see `run_job`) so that its peak memory is its own: the child resets the
kernel's resident-set high-water mark (/proc/self/clear_refs) once the model is loaded and reads
VmHWM after the timed loop. An onnxruntime child imports only onnxruntime and numpy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from utils.machine import available_cores, current_rss_mb, gpus, peak_rss_mb, reset_peak_rss

BACKENDS = ("tf", "xla", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16")


# --------------------------------------------------------------------------- timed loops


@dataclasses.dataclass
class TimingResult:
    """Per-call latencies of a timed loop and how the loop ended."""

    times_s: list[float]
    warmup_iters: int
    warmup_s: float
    #: True when the deadline stopped the loop before min_iters and min_duration were reached.
    budget_limited: bool
    min_iters: int
    min_duration_s: float

    @property
    def iterations(self) -> int:
        """Number of timed calls."""
        return len(self.times_s)

    @property
    def total_s(self) -> float:
        """Sum of the timed calls."""
        return float(sum(self.times_s))

    def stats(self) -> dict[str, float]:
        """Latency statistics in milliseconds (percentiles interpolate linearly)."""
        return latency_stats(self.times_s)


def latency_stats(times_s: list[float]) -> dict[str, float]:
    """Mean, median, p90, p99, min, max and standard deviation in milliseconds."""
    if not times_s:
        raise ValueError("no timed iterations to summarise; got an empty list")
    ms = np.asarray(times_s, dtype=np.float64) * 1e3
    return {
        "mean_ms": float(ms.mean()),
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "std_ms": float(ms.std()),
    }


def _timed_loop(
    fn: Callable[[], Any],
    min_iters: int,
    min_duration_s: float,
    deadline: float | None,
    max_iters: int | None = None,
) -> tuple[list[float], bool]:
    """Call fn one at a time until min_iters and min_duration_s are both met (or the deadline)."""
    clock = time.perf_counter
    times: list[float] = []
    append = times.append
    start = clock()
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        append(t1 - t0)
        n = len(times)
        if max_iters is not None and n >= max_iters:
            return times, False
        if n >= min_iters and t1 - start >= min_duration_s:
            return times, False
        # Stop when the next call, at the mean latency so far, would end past the deadline.
        if deadline is not None and t1 + (t1 - start) / n > deadline:
            return times, True


def time_callable(
    fn: Callable[[], Any],
    warmup_s: float = 0.2,
    min_iters: int = 10,
    min_duration_s: float = 3.0,
    deadline: float | None = None,
) -> TimingResult:
    """Time `fn()` with trtexec's conventions.

    Args:
        fn: the call to time; it must return only once its work is finished (synchronise
            asynchronous devices inside it).
        warmup_s: warm up for this many seconds, at least one call unless it is 0.
        min_iters: time at least this many calls ...
        min_duration_s: ... and for at least this many seconds.
        deadline: a `time.perf_counter()` value; the loop stops before a call that would end
            after it (always timing at least one call), and the result is `budget_limited`.

    Returns:
        The TimingResult with every call's latency.
    """
    if warmup_s < 0 or min_duration_s < 0:
        raise ValueError(f"warm-up and duration must be >= 0; got {warmup_s!r}, {min_duration_s!r}")
    if min_iters < 1:
        raise ValueError(f"min_iters must be at least 1; got {min_iters!r}")
    warm_iters = 0
    start = time.perf_counter()
    if warmup_s > 0:
        while True:
            fn()
            warm_iters += 1
            now = time.perf_counter()
            if now - start >= warmup_s:
                break
            if deadline is not None and now + (now - start) / warm_iters > deadline:
                break
    warm_s = time.perf_counter() - start
    times, limited = _timed_loop(fn, min_iters, min_duration_s, deadline)
    return TimingResult(
        times_s=times,
        warmup_iters=warm_iters,
        warmup_s=warm_s,
        budget_limited=limited,
        min_iters=min_iters,
        min_duration_s=min_duration_s,
    )


def loop_overhead_s(iterations: int = 20000) -> float:
    """Seconds the timed loop itself adds per call (two clock reads, an append, the checks)."""
    times, _ = _timed_loop(lambda: None, iterations, 0.0, None, max_iters=iterations)
    # Each recorded time holds one clock read plus the call; the bookkeeping between calls is
    # of the same order, so twice the mean no-op time bounds the per-call overhead.
    return 2.0 * float(np.mean(times))


# --------------------------------------------------------------------------- matmul peak


def _matmul_onnx(n: int) -> bytes:
    """A one-node ONNX graph: C = A @ B for float32 (n, n) inputs."""
    from onnx import TensorProto, helper

    node = helper.make_node("MatMul", ["A", "B"], ["C"])
    graph = helper.make_graph(
        [node],
        "matmul",
        [
            helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n]),
            helper.make_tensor_value_info("B", TensorProto.FLOAT, [n, n]),
        ],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _conv_onnx(channels: int, size: int) -> bytes:
    """A one-node ONNX graph: 3x3 'same' convolution, channels -> channels, NCHW (1, C, S, S)."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((channels, channels, 3, 3))
    node = helper.make_node("Conv", ["X", "W"], ["Y"], pads=[1, 1, 1, 1])
    shape = [1, channels, size, size]
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(weights.astype(np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


#: Kernels dense_peak times: numpy's BLAS matmul, onnxruntime's MatMul, onnxruntime's 3x3 Conv.
PEAK_KERNELS = ("numpy", "onnxruntime", "onnxruntime_conv")


def dense_peak(
    n: int = 2048,
    seconds: float = 2.0,
    threads: int | None = None,
    backends: tuple[str, ...] = PEAK_KERNELS,
    conv_channels: int = 256,
    conv_size: int = 128,
) -> dict[str, Any]:
    """Measure this machine's dense float32 arithmetic rate in GFLOP/s (2 FLOPs per MAC).

    "numpy" and "onnxruntime" multiply two n x n matrices (2 n^3 FLOPs); "onnxruntime_conv"
    runs a 3x3 convolution of conv_channels -> conv_channels on a conv_size^2 map, the kernel
    most segmentation networks spend their time in (onnxruntime's blocked NCHWc convolution is
    faster than its matmul on AVX-512 machines, so a matmul alone understates the peak).

    Args:
        n: matrix size.
        seconds: timing per kernel, after one warm-up call.
        threads: onnxruntime intra-op threads (default: the cores this process may use);
            numpy uses its BLAS's own setting.
        backends: which of PEAK_KERNELS to time.
        conv_channels: channels of the convolution.
        conv_size: height and width of the convolution's input.

    Returns:
        {kernel: {"best_gflops", "median_gflops", "calls"}, "peak_gflops": the best rate over
        the kernels, "matmul_peak_gflops": the best matmul rate, "n": n}.
    """
    if n < 1 or seconds <= 0:
        raise ValueError(f"matmul size and seconds must be positive; got n={n!r}, {seconds!r}")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flop = 2.0 * n**3
    out: dict[str, Any] = {
        "n": n,
        "conv": f"3x3 {conv_channels}->{conv_channels} on {conv_size}x{conv_size}",
    }
    for backend in backends:
        kernel_flop = flop
        if backend == "onnxruntime_conv":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads or available_cores()
            sess = ort.InferenceSession(
                _conv_onnx(conv_channels, conv_size), opts, providers=["CPUExecutionProvider"]
            )
            feeds = {
                "X": rng.standard_normal((1, conv_channels, conv_size, conv_size), dtype=np.float32)
            }
            kernel_flop = 2.0 * 9 * conv_channels**2 * conv_size**2

            def call(sess=sess, feeds=feeds) -> None:
                sess.run(None, feeds)
        elif backend == "numpy":
            c = np.empty_like(a)

            def call(c=c) -> None:
                np.matmul(a, b, out=c)
        elif backend == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads or available_cores()
            sess = ort.InferenceSession(_matmul_onnx(n), opts, providers=["CPUExecutionProvider"])
            feeds = {"A": a, "B": b}

            def call(sess=sess, feeds=feeds) -> None:
                sess.run(None, feeds)
        else:
            raise ValueError(f"peak kernels are {', '.join(PEAK_KERNELS)}; got {backend!r}")
        # A tiny warm-up time still makes one untimed call (allocation, thread start-up).
        times = time_callable(call, warmup_s=1e-6, min_iters=3, min_duration_s=seconds).times_s
        rates = [kernel_flop / t / 1e9 for t in times]
        out[backend] = {
            "best_gflops": max(rates),
            "median_gflops": float(np.median(rates)),
            "calls": len(times),
        }
    out["peak_gflops"] = max(out[b]["best_gflops"] for b in backends)
    matmuls = [out[b]["best_gflops"] for b in backends if b != "onnxruntime_conv"]
    out["matmul_peak_gflops"] = max(matmuls) if matmuls else None
    return out


# --------------------------------------------------------------------------- one job per process


def _input_array(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Generated float32 images in [0, 255] (the models' input contract)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, height, width, 3), dtype=np.uint8).astype(np.float32)


def _slice_onnx(shape: tuple[int, ...]) -> bytes:
    """An ONNX graph that reads one element of an input of `shape`: the cost of feeding it."""
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


def _timing_args(spec: dict[str, Any], start: float) -> dict[str, Any]:
    """time_callable keyword arguments from a job spec (its budget counts from `start`)."""
    budget = spec.get("budget_s")
    return {
        "warmup_s": float(spec.get("warmup_s", 0.2)),
        "min_iters": int(spec.get("min_iters", 10)),
        "min_duration_s": float(spec.get("min_duration_s", 3.0)),
        "deadline": None if budget is None else start + float(budget),
    }


def _finish(
    result: TimingResult, spec: dict[str, Any], feed_s: float, loop_s: float, extra: dict[str, Any]
) -> dict[str, Any]:
    """The JSON-ready outcome of a timed job."""
    stats = result.stats()
    batch = int(spec["batch_size"])
    overhead_s = feed_s + loop_s
    return {
        "status": "ok",
        **stats,
        "iterations": result.iterations,
        "warmup_iters": result.warmup_iters,
        "warmup_s": result.warmup_s,
        "timed_s": result.total_s,
        "budget_limited": result.budget_limited,
        "images_per_s": batch / (stats["mean_ms"] / 1e3),
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


def run_onnxruntime(spec: dict[str, Any]) -> dict[str, Any]:
    """Time an exported ONNX model with onnxruntime (fp32; CUDA provider when installed)."""
    import onnxruntime as ort

    start = time.perf_counter()
    if spec.get("precision", "fp32") == "bf16":
        raise ValueError(
            "the onnxruntime backend runs float32 or float16 exports; for bf16 use "
            "tensorrt or tf/xla"
        )
    threads = int(spec.get("threads") or available_cores())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = [
        p
        for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
        if p in ort.get_available_providers()
    ]
    sess = ort.InferenceSession(spec["onnx_path"], opts, providers=providers)
    name = sess.get_inputs()[0].name
    x = _input_array(int(spec["batch_size"]), int(spec["height"]), int(spec["width"]))
    if spec.get("layout", "nhwc").lower() == "nchw":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    feeds = {name: x}
    feed_sess = ort.InferenceSession(_slice_onnx(x.shape), opts, providers=providers)
    setup_peak = peak_rss_mb()
    reset = reset_peak_rss()
    baseline = current_rss_mb()

    def call() -> None:
        sess.run(None, feeds)

    result = time_callable(call, **_timing_args(spec, start))
    peak = peak_rss_mb()
    feed = time_callable(
        lambda: feed_sess.run(None, {"input": x}), warmup_s=0.05, min_iters=20, min_duration_s=0.2
    )
    extra = {
        "providers": sess.get_providers(),
        "threads": threads,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "setup_peak_rss_mb": setup_peak,
        "peak_rss_reset": reset,
    }
    if spec.get("profile"):
        popts = ort.SessionOptions()
        popts.intra_op_num_threads = threads
        popts.enable_profiling = True
        popts.profile_file_prefix = str(Path(spec["result_path"]).with_suffix("")) + "_ortprof"
        psess = ort.InferenceSession(spec["onnx_path"], popts, providers=providers)
        for _ in range(int(spec.get("profile_iters", 2))):
            psess.run(None, feeds)
        prof = psess.end_profiling()
        extra["profile"] = _profile_summary(prof)
        Path(prof).unlink(missing_ok=True)
    return _finish(result, spec, float(np.median(feed.times_s)), loop_overhead_s(), extra)


def run_tensorflow(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the model in this process and time it as a TF graph, with XLA when asked."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    import keras
    import tensorflow as tf

    from models import build_model

    precision = spec.get("precision", "fp32")
    policy = {"fp32": "float32", "fp16": "mixed_float16", "bf16": "mixed_bfloat16"}[precision]
    keras.mixed_precision.set_global_policy(policy)
    model = build_model(
        spec["model"], (int(spec["height"]), int(spec["width"]), 3), **spec.get("options", {})
    )
    xla = spec["backend"] == "xla"
    forward = tf.function(lambda x: model(x, training=False), jit_compile=xla)
    feed_fn = tf.function(lambda x: x[:1, :1, :1, :1], jit_compile=xla)
    x = tf.constant(_input_array(int(spec["batch_size"]), int(spec["height"]), int(spec["width"])))
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
    result = time_callable(call, **_timing_args(spec, start))
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


def trtexec_command(spec: dict[str, Any], times_path: str) -> list[str]:
    """The trtexec command line for a job (trtexec does its own warm-up and timing)."""
    from utils.export import find_trtexec

    exe = find_trtexec() or "trtexec"
    cmd = [
        exe,
        f"--onnx={spec['onnx_path']}",
        f"--warmUp={int(1000 * float(spec.get('warmup_s', 0.2)))}",
        f"--duration={max(1, round(float(spec.get('min_duration_s', 3.0))))}",
        f"--iterations={int(spec.get('min_iters', 10))}",
        "--avgRuns=1",
        f"--exportTimes={times_path}",
    ]
    precision = spec.get("precision", "fp32")
    if precision == "fp16":
        cmd.append("--fp16")
    elif precision == "bf16":
        cmd.append("--bf16")
    return cmd


def tensorrt_available() -> str | None:
    """Why TensorRT cannot run here, or None when trtexec and a GPU are present."""
    from utils.export import find_trtexec

    if find_trtexec() is None:
        return "trtexec not found (install TensorRT; on a Jetson it is /usr/src/tensorrt/bin)"
    if not gpus() and not Path("/etc/nv_tegra_release").exists():
        return "no NVIDIA GPU found"
    return None


def run_tensorrt(spec: dict[str, Any]) -> dict[str, Any]:
    """Build a TensorRT engine from the ONNX file and time it with trtexec."""
    why = tensorrt_available()
    if why is not None:
        raise RuntimeError(f"TensorRT unavailable: {why}")
    times_path = str(Path(spec["result_path"]).with_suffix("")) + "_trt_times.json"
    cmd = trtexec_command(spec, times_path)
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
        warmup_s=float(spec.get("warmup_s", 0.2)),
        budget_limited=False,
        min_iters=int(spec.get("min_iters", 10)),
        min_duration_s=float(spec.get("min_duration_s", 3.0)),
    )
    extra = {
        "trtexec": " ".join(cmd),
        "peak_rss_mb": None,
        "note": "trtexec latencyMs (H2D + compute + D2H); its own timing loop",
    }
    return _finish(result, spec, 0.0, 0.0, extra)


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement described by `spec` in this process (see benchmark.py)."""
    backend = spec.get("backend")
    if backend == "onnxruntime":
        return run_onnxruntime(spec)
    if backend in ("tf", "xla"):
        return run_tensorflow(spec)
    if backend == "tensorrt":
        return run_tensorrt(spec)
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


def run_job_subprocess(
    spec: dict[str, Any], workdir: str | os.PathLike, timeout_s: float | None = None
) -> dict[str, Any]:
    """Run `run_job(spec)` in a fresh Python process; its failure becomes a status message."""
    workdir = Path(workdir)
    tag = f"{spec.get('model', 'job')}_{spec['backend']}_{time.monotonic_ns()}".replace("+", "p")
    spec_path = workdir / f"{tag}_spec.json"
    result_path = workdir / f"{tag}_result.json"
    spec = {**spec, "result_path": str(result_path)}
    spec_path.write_text(json.dumps(spec))
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "utils.timing", str(spec_path), str(result_path)],
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
        print("usage: python -m utils.timing SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    try:
        outcome = run_job(spec)
    except Exception as exc:  # reported in the table rather than crashing the whole run
        outcome = {"status": f"error: {type(exc).__name__}: {exc}"}
    tmp = Path(argv[1] + ".tmp")
    tmp.write_text(json.dumps(outcome))
    os.replace(tmp, argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
