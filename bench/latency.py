"""The default benchmark: inference speed, compute and memory per model and backend.

Phase 1 builds every model once per size and batch in this process (parameters, compute,
ONNX export for the onnxruntime, OpenVINO and TensorRT jobs); phase 2 times each (model, backend) job in
a fresh process (bench.jobs), each given an even share of what is left of the budget, with a
1-second convolution beforehand that records how fast the machine was at that moment (other
processes share it). An OpenVINO row is checked against onnxruntime on its timed input and
fails, saying so, when it breaks deploy/checks.py's parity rule. Results:
STEM.{json,csv,md,png} through bench.report.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.jobs import JobSpec, run_job_subprocess
from bench.options import DEFAULT_OUTPUT_DIR, REFERENCE_SIZE
from bench.report import write_reports
from bench.roofline import roofline
from bench.rows import CPU_RUNTIMES, Row, job_rows, spec_label
from bench.timing import copy_bandwidth, dense_peak
from inference import runtimes
from inference.timing import MIN_DURATION_S, MIN_ITERS, WARMUP_S
from utils.errors import BadInput
from utils.io import check_writable_dir
from utils.machine import machine_info

#: Issue 16's target for the light models on an Intel CPU: OpenVINO this many times faster than
#: onnxruntime (a row below it says so).
OPENVINO_TARGET = 1.5
#: progress(phase, done, total, label): called before each step of a phase and at its end.
Progress = Callable[[str, int, int, str], None]

CONVENTIONS = (
    "GMACs: multiply-accumulates of the convolution, matmul and einsum ops of the traced "
    "inference graph (bench/flops.py); GFLOPs = 2 x GMACs; element-wise ops (batch norm, "
    "activations, additions, resizing, pooling) are not counted. Latency: one call on one "
    "batch of generated float32 images already in memory, output fetched; every throughput "
    "figure (images/s, GFLOP/s, the % of peak and roofline columns) comes from the MEDIAN "
    "latency, so one slow call among many does not pull it down (before this run's version "
    "images/s and GFLOP/s came from the mean). Peaks: the best float32 2048x2048 matmul rate "
    "(numpy BLAS or onnxruntime MLAS) at the start and end of the run, and the best dense rate "
    "seen in the run (those matmuls and a 3x3 256->256 convolution on 128x128 through "
    "onnxruntime, which also runs for 1 s before every job; onnxruntime's blocked convolution "
    "outruns its matmul on this CPU, so a network can exceed the matmul figure). Copy "
    "bandwidth: the best numpy copy of 256 MiB (bytes read + written per second, one thread "
    "and split over the cores) at the start and end of the run. Traffic: bytes the exported "
    "ONNX graph's nodes read and write at the shapes of ONNX shape inference, plus the weights "
    "once (bench/roofline.py): what a runtime that fuses nothing and caches nothing between "
    "nodes would move. Every job runs in a fresh process (peak memory is its own; an "
    "onnxruntime job's process holds onnxruntime, onnx and numpy, no TensorFlow). The "
    "column notes below say what each column is."
)


#: The backends when none are asked for: the CPU runtimes of the exported file side by side
#: (onnxruntime and OpenVINO; those not installed are left out, and run_inference says so).
DEFAULT_BACKENDS = tuple(n for n, e in runtimes.RUNTIMES.items() if e.source == "onnx" and e.cpu)


def _exported(backend: str) -> bool:
    """Whether a runtime runs the exported file (directly or as an engine built from it)."""
    return runtimes.entry(backend).source != "keras"


@dataclasses.dataclass
class InferenceConfig:
    """What the inference benchmark times, and how (benchmark.py's default command)."""

    #: Folder of the result files, and their file name stem.
    output_dir: str | os.PathLike = DEFAULT_OUTPUT_DIR
    name: str = "benchmark"
    #: (name, options) per model; None: every registered model with its default options.
    models: list[tuple[str, dict[str, Any]]] | None = None
    sizes: list[tuple[int, int]] = dataclasses.field(default_factory=lambda: [REFERENCE_SIZE])
    batch_sizes: list[int] = dataclasses.field(default_factory=lambda: [1])
    #: Some of inference.runtimes.RUNTIME_NAMES; None: DEFAULT_BACKENDS (resolve_backends).
    backends: list[str] | None = None
    precision: str = "fp32"
    #: Seconds for the whole run, split evenly over the jobs still to run.
    budget_s: float = 420.0
    min_iters: int = MIN_ITERS
    min_duration_s: float = MIN_DURATION_S
    warmup_s: float = WARMUP_S
    onnx_layout: str = "nhwc"
    threads: int | None = None
    #: off, auto (onnxruntime jobs below half the dense peak seen so far) or all.
    profile: str = "auto"
    #: The command that reproduces the run (written into the results).
    command: str = ""


# --------------------------------------------------------------------------- machine load


def _cpu_busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU jiffies of the whole machine from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


class LoadMeter:
    """How busy the machine was with OTHER processes while the benchmark ran."""

    def __init__(self) -> None:
        self.start = _cpu_busy_jiffies()
        self.own_start = self._own_cpu()

    @staticmethod
    def _own_cpu() -> float:
        """CPU seconds of this process and its finished children."""
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def other_cpu_pct(self) -> float | None:
        """Share of all cores' time used by other processes since the start, in percent."""
        end = _cpu_busy_jiffies()
        if self.start is None or end is None:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy_s = (end[0] - self.start[0]) / hz
        total_s = (end[1] - self.start[1]) / hz
        own_s = self._own_cpu() - self.own_start
        if total_s <= 0:
            return None
        return max(0.0, 100.0 * (busy_s - own_s) / total_s)


def base_meta(command: str, t_start: float, load: LoadMeter) -> dict[str, Any]:
    """Machine, command, date, wall time and load for a benchmark's result."""
    return {
        "command": command,
        "machine": machine_info(),
        "date_utc": utc_now(),
        "wall_s": time.monotonic() - t_start,
        "other_processes_cpu_pct": load.other_cpu_pct(),
        "load_average_end": list(os.getloadavg()),
    }


def utc_now() -> str:
    """The date and time in the results' form."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------- phase 1: build


def check_sizes(specs: list[tuple[str, dict[str, Any]]], sizes: list[tuple[int, int]]) -> None:
    """ValueError (naming the nearest valid sizes) unless every model takes every size."""
    # The registry imports Keras: only a run that builds models needs it.
    from models import get_info
    from models.layers import check_input_size

    for name, _ in specs:
        multiple = get_info(name).size_multiple
        for height, width in sizes:
            check_input_size(name, height, width, multiple)


def export_onnx_file(
    model: Any,
    path: Path,
    batch: int,
    height: int,
    width: int,
    precision: str = "fp32",
    nchw: bool = False,
) -> str:
    """Export a Keras model to ONNX at a fixed input shape; returns how it was converted."""
    # The exporter imports onnx (TensorFlow and tf2onnx as it runs): only phase 1 needs it.
    from deploy.export import export_onnx

    export_onnx(
        model, path, input_size=(height, width), batch=batch, precision=precision, nchw=nchw
    )
    return (
        f"{export_onnx.__module__}.export_onnx (frozen graph, tf2onnx opset 17)"
        + (f", {runtimes.FILE_PRECISIONS[precision]}" if precision != "fp32" else "")
        + (", NCHW" if nchw else "")
    )


def _prepare_group(
    name: str,
    opts: dict[str, Any],
    size: tuple[int, int],
    batch: int,
    rows: list[Row],
    onnx_path: Path | None,
    precision: str,
    nchw: bool = False,
) -> None:
    """Build one model (float32) in this process: count parameters and compute, export ONNX."""
    # Keras and the registry: the build phase runs in this process, the timing in children.
    import keras

    # models imports Keras: only on the paths that build one
    from bench.flops import model_macs
    from models import build_model, count_params

    try:
        keras.mixed_precision.set_global_policy("float32")
        model = build_model(name, (size[0], size[1], 3), **opts)
        params = count_params(model)
        compute = model_macs(model, size, batch)
        for row in rows:
            row.params = params
            row.gmacs, row.gflops = compute.gmacs / batch, compute.gflops / batch
        if onnx_path is not None:
            t0 = time.monotonic()
            how = export_onnx_file(
                model, onnx_path, batch, size[0], size[1], precision=precision, nchw=nchw
            )
            for row in rows:
                if _exported(row.backend):
                    row.export, row.export_s = how, time.monotonic() - t0
            _describe_export(onnx_path, rows)
        if any(runtimes.entry(row.backend).reference for row in rows):
            # the parity rule's tie case: only rows checked against a reference need it
            from models.trained import jumps_at_pooling_ties

            ties = jumps_at_pooling_ties(model)
            for row in rows:
                row.ties_rule = ties
        del model
    except Exception as exc:  # one broken model must not stop the others' measurements
        for row in rows:
            row.status = f"error building/exporting: {type(exc).__name__}: {exc}"
    keras.backend.clear_session()
    gc.collect()


def _describe_export(onnx_path: Path, rows: list[Row]) -> None:
    """Record what the export is, on every row of its group: the bytes a call moves (the
    roofline's traffic) and whether it passes the TensorRT-construct scan."""
    # deploy's scan and the traffic count read the file with onnx: only a run with an export
    from bench.roofline import onnx_traffic
    from deploy.checks import find_trt_incompatibilities

    traffic = onnx_traffic(onnx_path)
    problems = find_trt_incompatibilities(onnx_path)
    for row in rows:
        row.traffic_mb = traffic.total_bytes / 1e6
        row.weight_mb = traffic.weight_bytes / 1e6
        row.tensorrt_ready = not problems
        row.tensorrt_problems = problems
        if traffic.unknown:
            row.note = f"{len(traffic.unknown)} tensor(s) of unknown shape left out of the traffic"


def build_jobs(
    config: InferenceConfig,
    specs: list[tuple[str, dict[str, Any]]],
    workdir: Path,
    progress: Progress | None = None,
) -> list[tuple[Row, Path | None]]:
    """Phase 1: the rows of every (model, size, batch, backend), each with its ONNX file."""
    groups = [
        (name, opts, size, batch)
        for name, opts in specs
        for size in config.sizes
        for batch in config.batch_sizes
    ]
    needs_onnx = any(_exported(b) for b in config.backends)
    jobs: list[tuple[Row, Path | None]] = []
    for i, (name, opts, size, batch) in enumerate(groups):
        if progress is not None:
            label = f"{spec_label(name, opts)} {size[0]}x{size[1]} b{batch}"
            progress("build + export", i, len(groups), label)
        rows = job_rows(
            name, opts, size, batch, config.backends, config.precision, config.onnx_layout
        )
        onnx_path = workdir / f"model_{i}.onnx" if needs_onnx else None
        _prepare_group(
            name,
            opts,
            size,
            batch,
            rows,
            onnx_path,
            precision=config.precision if config.precision in runtimes.FILE_PRECISIONS else "fp32",
            nchw=config.onnx_layout == "nchw",
        )
        jobs.extend((row, onnx_path) for row in rows)
    if progress is not None:
        progress("build + export", len(groups), len(groups), "")
    return jobs


# --------------------------------------------------------------------------- phase 2: time


def _job_spec(config: InferenceConfig, row: Row, onnx_path: Path | None, slot: float) -> JobSpec:
    """The child process's job for one row."""
    return JobSpec(
        backend=row.backend,
        model=row.name,
        options=row.options,
        height=row.height,
        width=row.width,
        batch_size=row.batch,
        precision=config.precision,
        onnx_path=str(onnx_path),
        warmup_s=config.warmup_s,
        min_iters=config.min_iters,
        min_duration_s=config.min_duration_s,
        budget_s=slot,
        threads=config.threads,
        profile=config.profile == "all",
        layout=config.onnx_layout,
    )


def _needs_profile(config: InferenceConfig, row: Row, peaks_during: list[float]) -> bool:
    """--profile auto: a row of a runtime with a profiler (onnxruntime) below half the dense
    peak seen so far."""
    return (
        config.profile == "auto"
        and runtimes.entry(row.backend).profiler
        and row.ok
        and not row.profile
        and row.gflops * row.batch / (row.median_ms / 1e3) < 0.5 * max(peaks_during)
    )


def time_jobs(
    config: InferenceConfig,
    jobs: list[tuple[Row, Path | None]],
    workdir: Path,
    deadline: float,
    progress: Progress | None = None,
) -> list[float]:
    """Phase 2: time every pending row in its own process; returns the conv peaks seen."""
    peaks_during: list[float] = []
    for k, (row, onnx_path) in enumerate(jobs):
        if row.status != "pending":
            continue
        before = dense_peak(seconds=1.0, threads=config.threads, backends=("onnxruntime_conv",))[
            "onnxruntime_conv"
        ]
        row.conv_gflops_before = before["median_gflops"]
        peaks_during.append(before["best_gflops"])
        pending = sum(1 for r, _ in jobs[k:] if r.status == "pending")
        slot = max(0.0, (deadline - time.monotonic()) / max(1, pending))
        if progress is not None:
            progress("time", k, len(jobs), f"{row.label} ({slot:.0f} s)")
        spec = _job_spec(config, row, onnx_path, slot)
        row.budget_s = slot
        row.record(run_job_subprocess(spec, workdir))
        if row.ok and row.parity_reference is not None:
            judge_parity(row)
        if _needs_profile(config, row, peaks_during):
            if progress is not None:
                progress("time", k, len(jobs), f"{row.model} {row.backend} profile")
            quick = dataclasses.replace(
                spec, profile=True, warmup_s=0.0, min_iters=1, min_duration_s=0.0, budget_s=0.0
            )
            row.profile = run_job_subprocess(quick, workdir).get("profile")
    if progress is not None:
        progress("time", len(jobs), len(jobs), "")
    return peaks_during


def judge_parity(row: Row) -> None:
    """Judge a row's parity figures by the parity rule (inference.parity); a row that breaks
    it fails."""
    from inference.parity import Parity

    parity = Parity(
        row.parity_max_abs_diff, float(row.parity_agreement), float(row.parity_logit_scale or 0.0)
    ).judge(row.parity_precision or row.precision, bool(row.ties_rule))
    row.parity_max_diff_allowed, row.parity_min_agreement = (
        parity.max_diff_allowed,
        parity.min_agreement,
    )
    if parity.errors:
        row.status = (
            f"error: parity with {row.parity_reference} failed on the timed input: "
            + "; ".join(parity.errors)
            + " (inference/parity.py's rule); its timing is in the JSON, not in the table"
        )


def resolve_backends(
    backends: list[str] | None, note: Callable[[str], None] | None = None
) -> list[str]:
    """The backends to run: DEFAULT_BACKENDS when None, those this machine lacks left out with
    a note; BadInput naming what to install when an asked-for one cannot run here."""
    if backends is None:
        chosen = []
        for name in DEFAULT_BACKENDS:
            missing = runtimes.available(name)
            if missing is None:
                chosen.append(name)
            elif note is not None:
                note(f"{name} left out of the default backends: {missing}")
        return chosen
    for name in backends:
        missing = runtimes.available(name)
        if missing is not None:
            raise BadInput(f"--backends {name}: {missing}")
    return list(backends)


# --------------------------------------------------------------------------- derived figures


def finish_rows(
    rows: list[Row],
    peak_gflops: float,
    min_iters: int,
    min_duration_s: float,
    matmul_peak_gflops: float | None = None,
    bandwidth_gbs: float | None = None,
) -> None:
    """Add achieved GFLOP/s, % of peak, the roofline (bench.roofline: `peak_gflops` and
    `bandwidth_gbs`), speed-up over the TF graph and notes to every row."""
    tf_median = {r.group: r.median_ms for r in rows if r.backend == "tf" and r.ok}
    cpu_rows: dict[tuple[str, int, int, int], list[Row]] = {}
    for r in rows:
        if r.backend in CPU_RUNTIMES and r.ok and not r.on_gpu:
            cpu_rows.setdefault(r.group, []).append(r)
    for row in rows:
        row.ran_on = row.describe_ran_on()
        if not row.ok:
            row.note = row.status
            continue
        others = [r.median_ms for r in cpu_rows.get(row.group, []) if r is not row]
        if row in cpu_rows.get(row.group, []) and others:
            ratio = min(others) / row.median_ms
            row.speedup_vs_other_cpu_runtime = ratio
            row.fastest_cpu_runtime = ratio >= 1.0
        on_gpu = row.on_gpu
        achieved = row.gflops * row.batch / (row.median_ms / 1e3)
        row.achieved_gflops_per_s = achieved
        row.pct_of_peak = None if on_gpu else 100.0 * achieved / peak_gflops
        row.pct_of_matmul_peak = (
            None if on_gpu or not matmul_peak_gflops else 100.0 * achieved / matmul_peak_gflops
        )
        if not on_gpu and bandwidth_gbs and row.traffic_mb and row.gflops:
            roof = roofline(
                row.gflops * row.batch * 1e9, row.traffic_mb * 1e6, peak_gflops * 1e9,
                bandwidth_gbs * 1e9,
            )  # fmt: skip
            row.arithmetic_intensity = roof.intensity
            row.roofline_bound_ms = 1e3 * roof.bound_s
            row.roofline_share_pct = roof.share_pct(row.median_ms / 1e3)
            row.bound_by = roof.bound_by
        row.speedup_vs_tf = tf_median[row.group] / row.median_ms if row.group in tf_median else None
    ort_pct = {
        r.group: r.pct_of_matmul_peak
        for r in rows
        if r.backend == "onnxruntime" and r.ok and r.pct_of_matmul_peak is not None
    }
    for row in rows:
        if row.ok:
            notes = _notes(row, min_iters, min_duration_s, ort_pct.get(row.group))
            row.note = "; ".join([*([row.note] if row.note else []), *notes])


def _notes(
    row: Row, min_iters: int, min_duration_s: float, ort_pct_of_matmul_peak: float | None = None
) -> list[str]:
    """What a reader of a timed row should know: budget limits, overhead, slow spots, and for
    an OpenVINO row below the target, what share of the matmul peak the target would take."""
    notes: list[str] = []
    if row.budget_limited:
        notes.append(
            f"budget-limited: {row.iterations} timed call(s) in "
            f"{row.timed_s:.1f} s after {row.warmup_iters} warm-up "
            f"(wanted >= {min_iters} calls and >= {min_duration_s:g} s)"
        )
    if row.overhead_pct is not None and row.overhead_pct > 2.0:
        notes.append(f"harness overhead {row.overhead_pct:.1f}% > 2%")
    if row.backend == "onnxruntime" and not row.on_gpu:
        if row.pct_of_matmul_peak is not None and row.pct_of_matmul_peak < 50.0:
            notes.append("below 50% of the matmul peak")
        if row.speedup_vs_tf is not None and row.speedup_vs_tf < 2.0:
            notes.append("less than 2x the TF graph")
    if row.parity_reference is not None and row.parity_agreement is not None:
        diff = "-" if row.parity_max_abs_diff is None else f"{row.parity_max_abs_diff:.2g}"
        allowed = row.parity_max_diff_allowed
        notes.append(
            f"vs {row.parity_reference.split()[0]}: max |diff| {diff}"
            + ("" if allowed is None or allowed == float("inf") else f" (<= {allowed:.2g})")
            + f", argmax {100 * row.parity_agreement:.2f}% agree"
        )
    if (
        row.backend == "openvino"
        and row.speedup_vs_other_cpu_runtime is not None
        and row.speedup_vs_other_cpu_runtime < OPENVINO_TARGET
    ):
        why = ""
        if ort_pct_of_matmul_peak is not None:
            why = (
                f": onnxruntime already reaches {ort_pct_of_matmul_peak:.0f}% of the matmul peak, "
                f"so {OPENVINO_TARGET:g}x would take "
                f"{OPENVINO_TARGET * ort_pct_of_matmul_peak:.0f}%"
            )
        notes.append(
            f"OpenVINO {row.speedup_vs_other_cpu_runtime:.2f}x onnxruntime, below the "
            f"{OPENVINO_TARGET:g}x target{why}"
        )
    if row.profile:
        top = ", ".join(f"{p['op']} {p['pct']:.0f}%" for p in row.profile["by_op_type"][:4])
        notes.append(f"ORT time by op: {top}")
    return notes


# --------------------------------------------------------------------------- the run


def _settings(config: InferenceConfig) -> dict[str, Any]:
    """The run's settings as the results record them."""
    return {
        "budget_s": config.budget_s,
        "min_iters": config.min_iters,
        "min_duration_s": config.min_duration_s,
        "warmup_s": config.warmup_s,
        "threads": config.threads,
        "backends": config.backends,
        "onnx_layout": config.onnx_layout,
        "precision": config.precision,
        "sizes": [list(s) for s in config.sizes],
        "batch_sizes": config.batch_sizes,
    }


def run_inference(
    config: InferenceConfig,
    progress: Progress | None = None,
    note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the inference benchmark and write its files; returns {"meta": ..., "rows": [Row]}.

    Args:
        config: what to time and how.
        progress: called before each step of the two phases ("build + export", "time").
        note: called with what the run skips and why (e.g. TensorRT without a GPU).
    """
    t_start = time.monotonic()
    deadline = t_start + config.budget_s
    out_dir = check_writable_dir(config.output_dir)
    if config.models:
        specs = list(config.models)
    else:
        from models import MODELS  # the registry imports Keras

        specs = [(name, {}) for name in MODELS]
    check_sizes(specs, config.sizes)
    config = dataclasses.replace(config, backends=resolve_backends(config.backends, note))
    load = LoadMeter()
    machine = machine_info()
    peak_start = dense_peak(seconds=2.0, threads=config.threads)
    bandwidth_start = copy_bandwidth(threads=config.threads)
    with tempfile.TemporaryDirectory(prefix="benchmark-") as workdir:
        jobs = build_jobs(config, specs, Path(workdir), progress)
        peaks_during = time_jobs(config, jobs, Path(workdir), deadline, progress)
    peak_end = dense_peak(seconds=2.0, threads=config.threads)
    bandwidth_end = copy_bandwidth(threads=config.threads)
    bandwidth = max(bandwidth_start["best_gbs"], bandwidth_end["best_gbs"])
    peak = max(peak_start["peak_gflops"], peak_end["peak_gflops"], *peaks_during)
    matmul_peak = max(peak_start["matmul_peak_gflops"], peak_end["matmul_peak_gflops"])
    rows = [row for row, _ in jobs]
    finish_rows(rows, peak, config.min_iters, config.min_duration_s, matmul_peak, bandwidth)
    meta = {
        "command": config.command,
        "date_utc": utc_now(),
        "machine": machine,
        "peak_start": peak_start,
        "peak_end": peak_end,
        "peak_during_gflops": peaks_during,
        "peak_gflops": peak,
        "matmul_peak_gflops": matmul_peak,
        "copy_bandwidth_start": bandwidth_start,
        "copy_bandwidth_end": bandwidth_end,
        "copy_bandwidth_gbs": bandwidth,
        "ridge_flop_per_byte": peak / bandwidth,
        "other_processes_cpu_pct": load.other_cpu_pct(),
        "load_average_end": list(os.getloadavg()),
        "wall_s": time.monotonic() - t_start,
        "settings": _settings(config),
        "conventions": CONVENTIONS,
    }
    report = {"meta": meta, "rows": rows}
    write_reports(report, out_dir, config.name)
    return report
