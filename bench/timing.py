"""The machine's own figures: its dense arithmetic peak and its copy bandwidth.

Both are timed with the suite's one timing loop (`inference.timing.time_callable`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from inference.timing import time_callable
from utils.machine import available_cores

# --------------------------------------------------------------------------- matmul peak


def _matmul_onnx(n: int) -> bytes:
    """A one-node ONNX graph: C = A @ B for float32 (n, n) inputs."""
    # ONNX libraries only on the paths that run them
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
    # ONNX libraries only on the paths that run them
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
            # ONNX libraries only on the paths that run them
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
            # ONNX libraries only on the paths that run them
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


# --------------------------------------------------------------------------- copy bandwidth


def copy_bandwidth(mib: int = 256, repeats: int = 5, threads: int | None = None) -> dict[str, Any]:
    """Measure this machine's memory bandwidth with a large numpy copy, in GB/s (1e9 bytes/s).

    A copy of `mib` MiB reads and writes that many bytes (2 x `mib` MiB moved, the convention
    of bench.roofline's traffic count: bytes read plus bytes written). It runs `repeats` times
    on one thread and `repeats` times split over `threads` threads (numpy releases the GIL for
    plain copies), after one untimed copy that touches every page of the destination.

    Args:
        mib: size of the copied array (larger than the caches that matter: 256 MiB).
        repeats: timed copies per thread count.
        threads: threads of the split copy (default: the cores this process may use).

    Returns:
        {"best_gbs", "median_gbs" (over every timed copy), "single_thread_best_gbs",
        "threads", "mib", "copies"}.
    """
    if mib < 1 or repeats < 1:
        raise ValueError(f"copy size and repeats must be positive; got {mib!r} MiB, {repeats!r}")
    # the thread pool only where the copy is timed
    from concurrent.futures import ThreadPoolExecutor

    threads = int(threads or available_cores())
    src = np.ones(mib * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch every page before timing
    moved = 2.0 * src.nbytes
    bounds = np.linspace(0, src.size, threads + 1).astype(np.int64)

    def part(i: int) -> None:
        np.copyto(dst[bounds[i] : bounds[i + 1]], src[bounds[i] : bounds[i + 1]])

    single, split = [], []
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            np.copyto(dst, src)
            single.append(moved / (time.perf_counter() - t0) / 1e9)
            t0 = time.perf_counter()
            list(pool.map(part, range(threads)))
            split.append(moved / (time.perf_counter() - t0) / 1e9)
    rates = single + split
    return {
        "best_gbs": max(rates),
        "median_gbs": float(np.median(rates)),
        "single_thread_best_gbs": max(single),
        "threads": threads,
        "mib": mib,
        "copies": len(rates),
    }
