"""The one timing loop of the suite: trtexec's rule, for every runtime.

Warm up for a time (at least one call), then time calls one by one until both a minimum number
of calls and a minimum duration are reached. A deadline (a budget) may stop the loop earlier;
the result then says so (`budget_limited`). The defaults are written here once (WARMUP_S,
MIN_ITERS, MIN_DURATION_S, trtexec's --warmUp 200 ms, --iterations 10, --duration 3 s); the
benchmark, the study and convert_to_onnx.py's TensorRT check take theirs from here.

A timed call may return the seconds of its parts (a TensorRT call: copy in, compute, copy out,
from CUDA events); the loop keeps them beside the wall-clock times (`TimingResult.parts_s`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

#: Default warm-up seconds before timing (trtexec --warmUp, in seconds).
WARMUP_S = 0.2
#: Default least number of timed calls (trtexec --iterations).
MIN_ITERS = 10
#: Default least seconds of timed calls (trtexec --duration).
MIN_DURATION_S = 3.0

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
    #: Per timed call, the seconds of its parts when the call returned them (a tuple), else
    #: empty.
    parts_s: list[tuple[float, ...]] = dataclasses.field(default_factory=list)

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
    import numpy as np  # numpy only where statistics are computed (see the module docstring)

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
    parts: list[tuple[float, ...]] | None = None,
) -> tuple[list[float], bool]:
    """Call fn one at a time until min_iters and min_duration_s are both met (or the deadline);
    a tuple that fn returns is appended to `parts`."""
    clock = time.perf_counter
    times: list[float] = []
    append = times.append
    start = clock()
    while True:
        t0 = clock()
        returned = fn()
        t1 = clock()
        append(t1 - t0)
        if parts is not None and isinstance(returned, tuple):
            parts.append(returned)
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
    warmup_s: float = WARMUP_S,
    min_iters: int = MIN_ITERS,
    min_duration_s: float = MIN_DURATION_S,
    deadline: float | None = None,
) -> TimingResult:
    """Time `fn()` with trtexec's conventions.

    Args:
        fn: the call to time; it must return only once its work is finished (synchronise
            asynchronous devices inside it). A tuple it returns (seconds of the call's parts)
            is kept in `parts_s`.
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
    parts: list[tuple[float, ...]] = []
    times, limited = _timed_loop(fn, min_iters, min_duration_s, deadline, parts=parts)
    return TimingResult(
        times_s=times,
        warmup_iters=warm_iters,
        warmup_s=warm_s,
        budget_limited=limited,
        min_iters=min_iters,
        min_duration_s=min_duration_s,
        parts_s=parts,
    )


def loop_overhead_s(iterations: int = 20000) -> float:
    """Seconds the timed loop itself adds per call (two clock reads, an append, the checks)."""
    times, _ = _timed_loop(lambda: None, iterations, 0.0, None, max_iters=iterations)
    mean = sum(times) / len(times)
    # Each recorded time holds one clock read plus the call; the bookkeeping between calls is
    # of the same order, so twice the mean no-op time bounds the per-call overhead.
    return 2.0 * mean
