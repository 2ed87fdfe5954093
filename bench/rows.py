"""The one row schema of the inference benchmark, from which its CSV, markdown and plots are made.

A row is one (model, input size, batch, backend) measurement. It is made with its identity
(`job_rows`), then filled in four steps: the parent process builds the model (parameters,
compute, export), the timing loop records the machine's speed and the job's budget, the child
process's outcome (`bench.jobs`) is recorded, and `bench.latency.finish_rows` derives the
figures that compare rows (GFLOP/s, % of peak, the roofline, speed-up over the TF graph, notes);
the report adds the model's mIoU where the output folder holds one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from inference.runtimes import RUNTIMES

#: The CPU runtimes of one ONNX file that the tables set side by side (from the registry).
CPU_RUNTIMES = tuple(n for n, e in RUNTIMES.items() if e.source == "onnx" and e.cpu)


def spec_label(name: str, options: Mapping[str, Any]) -> str:
    """The model column: the name, with its options when any were given."""
    if not options:
        return name
    return f"{name}:" + ",".join(f"{k}={v}" for k, v in options.items())


@dataclasses.dataclass
class Row:
    """One inference measurement; fields in the order they are filled in (the JSON order)."""

    # --- what is measured
    #: The model column: the registered name with its options (see spec_label).
    model: str
    name: str
    options: dict[str, Any]
    backend: str
    precision: str
    height: int
    width: int
    batch: int
    #: NHWC or NCHW (the input layout the backend is fed).
    layout: str
    #: "pending", "ok", "skipped: ...", or "error...: ..." with the reason.
    status: str = "pending"
    # --- built in the parent process, per image
    params: int | None = None
    gmacs: float | None = None
    gflops: float | None = None
    #: How the ONNX file was exported, and how long it took (onnxruntime, openvino, tensorrt).
    export: str | None = None
    export_s: float | None = None
    #: MB (1e6 bytes) one call of the exported graph reads and writes, weights included, and
    #: the weights alone (bench.roofline.onnx_traffic); None without an ONNX export.
    traffic_mb: float | None = None
    weight_mb: float | None = None
    #: Whether the export passed deploy/checks.py's TensorRT-construct scan, and what it found.
    tensorrt_ready: bool | None = None
    tensorrt_problems: list[str] | None = None
    # --- set by the timing loop before the job
    #: Median GFLOP/s of a 1-second convolution just before the job (how fast the machine was).
    conv_gflops_before: float | None = None
    budget_s: float | None = None
    # --- the job's outcome (bench.jobs)
    mean_ms: float | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    iterations: int | None = None
    warmup_iters: int | None = None
    warmup_s: float | None = None
    timed_s: float | None = None
    budget_limited: bool | None = None
    images_per_s: float | None = None
    feed_overhead_ms: float | None = None
    loop_overhead_ms: float | None = None
    overhead_pct: float | None = None
    times_ms: list[float] | None = None
    #: What actually ran: onnxruntime's session.get_providers(), OpenVINO's EXECUTION_DEVICES,
    #: the GPU of a TensorRT engine (the runtime's ran_on()).
    providers: list[str] | None = None
    #: The runtime's version (onnxruntime, openvino).
    runtime_version: str | None = None
    threads: int | None = None
    peak_rss_mb: float | None = None
    baseline_rss_mb: float | None = None
    setup_peak_rss_mb: float | None = None
    peak_rss_reset: bool | None = None
    #: The device(s) that ran it and the runtime's precision setting (Keras policy, OpenVINO's
    #: inference precision).
    device: str | None = None
    policy: str | None = None
    #: Runtimes that time the parts of a call (TensorRT, CUDA events): median and p90 GPU
    #: compute milliseconds, and the median copies in and out.
    compute_median_ms: float | None = None
    compute_p90_ms: float | None = None
    copy_in_ms: float | None = None
    copy_out_ms: float | None = None
    #: onnxruntime's profile summary (by op type, top nodes), when profiled.
    profile: dict[str, Any] | None = None
    #: A runtime checked against a reference (OpenVINO, TensorRT): its outputs against the
    #: reference runtime's on the timed input.
    parity_reference: str | None = None
    parity_max_abs_diff: float | None = None
    parity_agreement: float | None = None
    parity_logit_scale: float | None = None
    parity_precision: str | None = None
    #: The limits of deploy/checks.py's parity rule for this row (set by the parent process,
    #: which knows from the Keras model whether its outputs jump at pooling ties).
    parity_max_diff_allowed: float | None = None
    parity_min_agreement: float | None = None
    ties_rule: bool | None = None
    # --- derived from all rows (bench.latency.finish_rows)
    achieved_gflops_per_s: float | None = None
    pct_of_peak: float | None = None
    pct_of_matmul_peak: float | None = None
    speedup_vs_tf: float | None = None
    #: The fastest median latency of the other CPU runtimes of the group over this row's:
    #: > 1 means this row is faster than each of them.
    speedup_vs_other_cpu_runtime: float | None = None
    #: Whether this row is the fastest CPU runtime of its group (None: nothing to compare).
    fastest_cpu_runtime: bool | None = None
    #: describe_ran_on(): what actually ran (the table's "ran on" column).
    ran_on: str | None = None
    #: The roofline (bench.roofline, CPU rows): FLOP per byte moved, the bound time
    #: max(FLOPs / peak, bytes / copy bandwidth), the bound's share of the median latency,
    #: and what bounds the call ("memory" below the ridge point, else "compute").
    arithmetic_intensity: float | None = None
    roofline_bound_ms: float | None = None
    roofline_share_pct: float | None = None
    bound_by: str | None = None
    # --- added by the report from the output folder (bench.report.load_accuracy_results)
    #: mIoU (0..1) of the model from an evaluate.py result or study.json, and that file's name.
    miou: float | None = None
    miou_source: str | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        """Whether the job ran and was timed."""
        return self.status == "ok"

    @property
    def group(self) -> tuple[str, int, int, int]:
        """(model, height, width, batch): the rows that differ only in backend."""
        return self.model, self.height, self.width, self.batch

    @property
    def on_gpu(self) -> bool:
        """Whether the job ran on a GPU (% of the CPU's peak is then meaningless)."""
        return bool(
            str(self.device or "").startswith("GPU")
            or (self.backend in RUNTIMES and not RUNTIMES[self.backend].cpu)
            or "CUDAExecutionProvider" in (self.providers or [])
        )

    def describe_ran_on(self) -> str | None:
        """What actually ran, in a few words: onnxruntime's providers (short names), OpenVINO's
        devices, the TF device; None when the job did not say."""
        if self.providers:
            return ",".join(p.removesuffix("ExecutionProvider") for p in self.providers)
        return self.device

    @property
    def label(self) -> str:
        """Model, size, batch and backend in a few words (progress lines)."""
        return f"{self.model} {self.height}x{self.width} b{self.batch} {self.backend}"

    def record(self, values: Mapping[str, Any]) -> None:
        """Set fields from a mapping (a job's outcome); ValueError naming unknown fields."""
        unknown = sorted(set(values) - FIELDS)
        if unknown:
            raise ValueError(f"inference rows have no field(s) {unknown!r}")
        for key, value in values.items():
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (every field, None where not measured)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Row:
        """A row from its JSON form."""
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        row = cls(**{k: data[k] for k in required if k in data})
        row.record({k: v for k, v in data.items() if k not in required})
        return row


FIELDS = frozenset(f.name for f in dataclasses.fields(Row))

#: The CSV columns, in order (the nested fields, options, times, profile, are in the JSON only).
CSV_COLUMNS = (
    "model",
    "name",
    "backend",
    "layout",
    "precision",
    "height",
    "width",
    "batch",
    "status",
    "params",
    "gmacs",
    "gflops",
    "mean_ms",
    "median_ms",
    "p90_ms",
    "p99_ms",
    "min_ms",
    "max_ms",
    "std_ms",
    "compute_median_ms",
    "copy_in_ms",
    "copy_out_ms",
    "images_per_s",
    "achieved_gflops_per_s",
    "pct_of_matmul_peak",
    "pct_of_peak",
    "traffic_mb",
    "weight_mb",
    "arithmetic_intensity",
    "bound_by",
    "roofline_bound_ms",
    "roofline_share_pct",
    "speedup_vs_tf",
    "speedup_vs_other_cpu_runtime",
    "fastest_cpu_runtime",
    "ran_on",
    "runtime_version",
    "threads",
    "parity_max_abs_diff",
    "parity_agreement",
    "tensorrt_ready",
    "miou",
    "miou_source",
    "peak_rss_mb",
    "baseline_rss_mb",
    "setup_peak_rss_mb",
    "iterations",
    "warmup_iters",
    "warmup_s",
    "timed_s",
    "budget_limited",
    "conv_gflops_before",
    "budget_s",
    "overhead_pct",
    "feed_overhead_ms",
    "loop_overhead_ms",
    "export",
    "export_s",
    "note",
)
if not set(CSV_COLUMNS) <= FIELDS:
    raise ValueError(f"CSV columns without a row field: {sorted(set(CSV_COLUMNS) - FIELDS)}")


def job_rows(
    name: str,
    options: dict[str, Any],
    size: tuple[int, int],
    batch: int,
    backends: list[str],
    precision: str,
    layout: str = "nhwc",
) -> list[Row]:
    """Pending rows for one model at one size and batch, one per backend."""
    return [
        Row(
            model=spec_label(name, options),
            name=name,
            options=options,
            backend=b,
            precision=precision,
            height=size[0],
            width=size[1],
            batch=batch,
            layout="NHWC" if RUNTIMES[b].source == "keras" else layout.upper(),
        )
        for b in backends
    ]
