"""Tests of the timing loop (inference/timing.py), the machine's peaks (bench/timing.py), the job
runner (bench/jobs.py) and bench/flops.py."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from bench import flops, jobs
from bench import timing as peaks
from inference import timing
from utils import machine


def test_time_callable_measures_a_known_duration():
    """A 20 ms sleep is timed as about 20 ms (wide upper bound: the machine may be busy)."""
    result = timing.time_callable(
        lambda: time.sleep(0.02), warmup_s=0.05, min_iters=5, min_duration_s=0.15
    )
    stats = result.stats()
    assert result.iterations >= 5
    assert result.total_s >= 0.15
    assert result.warmup_iters >= 1
    assert not result.budget_limited
    assert 19.5 <= stats["median_ms"] <= 60.0
    assert 19.5 <= stats["mean_ms"] <= 60.0
    assert stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
    assert stats["p99_ms"] <= stats["max_ms"]


def test_time_callable_counts_calls_exactly():
    """Every call is either warm-up or timed, and each timed call is recorded once."""
    calls = []
    result = timing.time_callable(
        lambda: calls.append(1), warmup_s=0.01, min_iters=50, min_duration_s=0.0
    )
    assert len(calls) == result.warmup_iters + result.iterations
    assert result.iterations == 50


def test_deadline_stops_the_loop_and_says_so():
    """A deadline shorter than min_iters calls stops early with budget_limited set."""
    deadline = time.perf_counter() + 0.1
    result = timing.time_callable(
        lambda: time.sleep(0.02),
        warmup_s=0.0,
        min_iters=100,
        min_duration_s=10.0,
        deadline=deadline,
    )
    assert result.budget_limited
    assert 1 <= result.iterations < 100
    assert result.warmup_iters == 0


def test_deadline_in_the_past_still_times_one_call():
    result = timing.time_callable(
        lambda: None,
        warmup_s=0.0,
        min_iters=10,
        min_duration_s=1.0,
        deadline=time.perf_counter() - 1.0,
    )
    assert result.iterations == 1
    assert result.budget_limited


def test_latency_stats_match_numpy():
    times = [0.001, 0.002, 0.003, 0.004, 0.010]
    stats = timing.latency_stats(times)
    ms = np.array(times) * 1e3
    assert stats["mean_ms"] == pytest.approx(ms.mean())
    assert stats["median_ms"] == pytest.approx(3.0)
    assert stats["p90_ms"] == pytest.approx(np.percentile(ms, 90))
    assert stats["p99_ms"] == pytest.approx(np.percentile(ms, 99))
    assert stats["max_ms"] == pytest.approx(10.0)


@pytest.mark.parametrize("kwargs", [{"min_iters": 0}, {"warmup_s": -1.0}, {"min_duration_s": -0.5}])
def test_time_callable_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match="got"):
        timing.time_callable(lambda: None, **kwargs)


def test_latency_stats_rejects_empty():
    with pytest.raises(ValueError, match="empty"):
        timing.latency_stats([])


def test_loop_overhead_is_small_and_positive():
    overhead = timing.loop_overhead_s(2000)
    assert 0.0 < overhead < 1e-3


def test_dense_peak_reports_each_kernel():
    peak = peaks.dense_peak(n=256, seconds=0.1, conv_channels=32, conv_size=32)
    for kernel in peaks.PEAK_KERNELS:
        assert peak[kernel]["best_gflops"] >= peak[kernel]["median_gflops"] > 0
        assert peak[kernel]["calls"] >= 3
    assert peak["peak_gflops"] == max(peak[k]["best_gflops"] for k in peaks.PEAK_KERNELS)
    assert peak["matmul_peak_gflops"] == max(
        peak["numpy"]["best_gflops"], peak["onnxruntime"]["best_gflops"]
    )
    with pytest.raises(ValueError, match="peak kernels"):
        peaks.dense_peak(n=8, seconds=0.01, backends=("cublas",))


def test_copy_bandwidth_reports_one_and_several_threads():
    bw = peaks.copy_bandwidth(mib=8, repeats=2, threads=2)
    assert bw["copies"] == 4 and bw["threads"] == 2 and bw["mib"] == 8
    assert bw["best_gbs"] >= bw["median_gbs"] > 0
    assert bw["best_gbs"] >= bw["single_thread_best_gbs"] > 0
    # a copy moves 2 x 8 MiB; no machine does that in under 10 microseconds (> 1.6 TB/s)
    assert bw["best_gbs"] < 1600
    with pytest.raises(ValueError, match="positive"):
        peaks.copy_bandwidth(mib=0)


def test_conv_peak_graph_computes_a_convolution():
    """The peak's convolution graph really convolves (checked against a numpy reference)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(peaks._conv_onnx(4, 6), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 4, 6, 6)).astype(np.float32)
    got = sess.run(None, {"X": x})[0]
    w = np.random.default_rng(0).standard_normal((4, 4, 3, 3)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros_like(got)
    for i in range(6):
        for j in range(6):
            want[0, :, i, j] = np.einsum("ocuv,cuv->o", w, padded[0, :, i : i + 3, j : j + 3])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_machine_info_names_cpu_cores_and_versions():
    info = machine.machine_info()
    assert info["cpu"] and info["cores"] >= 1
    assert {"tensorflow", "onnxruntime", "numpy"} <= set(info["versions"])
    assert isinstance(info["gpus"], list)
    assert "cores" in machine.describe_machine(info)


def test_peak_rss_follows_an_allocation():
    """After a reset, touching 200 MB raises the high-water mark by about that much."""
    if not machine.reset_peak_rss():
        pytest.skip("/proc/self/clear_refs is not writable here")
    before = machine.peak_rss_mb()
    block = np.ones(50 * 2**20 // 4 * 4, dtype=np.float32)  # 200 MiB, every page touched
    after = machine.peak_rss_mb()
    del block
    assert after - before >= 150


def test_onnxruntime_job_in_a_subprocess(tmp_path):
    """run_job_subprocess times an ONNX file in a child process and returns its statistics."""
    path = tmp_path / "matmul.onnx"
    # A graph that maps (1, 8, 8, 3) to (1, 1, 1, 1): the feed-overhead graph doubles as a model.
    path.write_bytes(jobs._slice_onnx((1, 8, 8, 3)))
    spec = {
        "backend": "onnxruntime",
        "model": "slice",
        "onnx_path": str(path),
        "height": 8,
        "width": 8,
        "batch_size": 1,
        "warmup_s": 0.01,
        "min_iters": 5,
        "min_duration_s": 0.01,
        "budget_s": 30.0,
        "threads": 1,
    }
    result = jobs.run_job_subprocess(spec, tmp_path)
    assert result["status"] == "ok", result
    assert result["iterations"] >= 5 and len(result["times_ms"]) == result["iterations"]
    # images/s from the median latency, not the mean (issue 19)
    assert result["images_per_s"] == pytest.approx(1e3 / result["median_ms"])
    assert result["peak_rss_mb"] > 0
    json.dumps(result)


def test_subprocess_failure_becomes_a_status(tmp_path):
    spec = {
        "backend": "onnxruntime",
        "model": "missing",
        "onnx_path": str(tmp_path / "no.onnx"),
        "height": 8,
        "width": 8,
        "batch_size": 1,
    }
    result = jobs.run_job_subprocess(spec, tmp_path)
    assert result["status"].startswith("error:")


def test_job_spec_round_trips_through_json_with_the_timing_defaults():
    spec = jobs.JobSpec(backend="onnxruntime", height=8, width=16, batch_size=2)
    assert jobs.JobSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert (spec.warmup_s, spec.min_iters, spec.min_duration_s) == (
        timing.WARMUP_S,
        timing.MIN_ITERS,
        timing.MIN_DURATION_S,
    )
    with pytest.raises(ValueError, match="warmup"):
        jobs.JobSpec.from_dict({**spec.to_dict(), "warmup": 1.0})


class FakeClock:
    """A clock that each call advances by its duration."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_loop_warms_up_then_times_10_calls_and_3_seconds_keeping_parts(monkeypatch):
    """trtexec's rule by the defaults (200 ms warm-up, >= 10 calls and >= 3 s), on a fake clock,
    with the seconds a call returns for its parts (a TensorRT call's copy in, compute, copy
    out) kept per timed call."""
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    calls = []

    def run(duration: float):
        def once():
            calls.append(clock.now)
            clock.now += duration
            return (0.001, duration - 0.003, 0.002)

        return once

    # 62.5 ms calls (exact in binary): 4 warm-up calls reach 200 ms, then 48 calls make 3 s
    result = timing.time_callable(run(0.0625))
    assert result.warmup_iters == 4 and result.iterations == 48 and len(calls) == 52
    assert result.parts_s == [(0.001, 0.0625 - 0.003, 0.002)] * 48
    # 1 s calls: 1 warm-up call, then the 10-call minimum outlasts 3 s
    calls.clear()
    result = timing.time_callable(run(1.0))
    assert result.iterations == 10 and len(calls) == 11
    # a call that returns no tuple leaves no parts
    assert timing.time_callable(lambda: None, 0.0, 3, 0.0).parts_s == []


def test_parts_of_a_timed_call_by_hand():
    """The job's GPU compute and copy figures from the parts of the timed calls."""
    parts = [(0.001, c / 1000, 0.002) for c in range(1, 11)]  # compute 1..10 ms
    result = timing.TimingResult([0.01] * 10, 1, 0.2, False, 10, 3.0, parts)
    got = jobs._parts(result)
    assert got["compute_median_ms"] == pytest.approx(5.5)
    assert got["compute_p90_ms"] == pytest.approx(9.1)  # numpy's linear interpolation
    assert got["copy_in_ms"] == pytest.approx(1.0) and got["copy_out_ms"] == pytest.approx(2.0)
    assert jobs._parts(timing.TimingResult([0.01], 0, 0.0, False, 1, 0.0)) == {}


# --------------------------------------------------------------------------- compute counts


def _tiny_model():
    """A model with one of each counted layer kind, at 8x8 input."""
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same")(inputs)  # 8*8 * 8 * 3*3*3
    x = layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 4*4*8 * 3*3
    x = layers.SeparableConv2D(16, 3, padding="same")(x)  # 4*4*8*9 + 4*4*16*8
    x = layers.Conv2DTranspose(4, 2, strides=2)(x)  # in 4*4*16 * 2*2*4
    x = layers.Dense(5)(x)  # 8*8*4 * 5
    return keras.Model(inputs, x)


def test_model_macs_counts_each_layer_kind():
    expected = (
        (8 * 8 * 8 * 27)
        + (4 * 4 * 8 * 9)
        + (4 * 4 * 8 * 9 + 4 * 4 * 16 * 8)
        + (4 * 4 * 16 * 2 * 2 * 4)
        + (8 * 8 * 4 * 5)
    )
    count = flops.model_macs(_tiny_model(), (8, 8), batch_size=1)
    assert count.macs == expected
    assert count.gflops == pytest.approx(2 * expected / 1e9)
    assert not count.unknown_shapes
    assert flops.model_macs(_tiny_model(), (8, 8), batch_size=3).macs == 3 * expected


def test_einsum_macs():
    # The adaptive pooling einsum: (bins, H) x (N, H, W, C) -> every index multiplied once.
    assert flops.einsum_macs("ih,nhwc->niwc", [[6, 32], [2, 32, 64, 128]]) == 6 * 32 * 2 * 64 * 128
    assert flops.einsum_macs("...ij,...jk->...ik", [[2, 3, 4], [2, 4, 5]]) == 2 * 3 * 4 * 5
    with pytest.raises(ValueError, match="operands"):
        flops.einsum_macs("ij,jk->ik", [[2, 3]])


def test_model_macs_rejects_bad_batch():
    with pytest.raises(ValueError, match="positive"):
        flops.model_macs(_tiny_model(), (8, 8), batch_size=0)
