"""Reports of the benchmarks: markdown and text tables, CSV, JSON and machine lines; the plots
are bench/plots.py's (`plot_latency`, `plot_pareto`, re-exported here).

The inference benchmark has two tables: the compact one for the terminal (COMPACT_COLUMNS:
what someone choosing a model reads first) and the full one for the markdown page
(TABLE_COLUMNS), whose every column is explained by `column_notes` under it; the CSV and JSON
hold every field of bench.rows.Row.
"""

from __future__ import annotations

import csv
import json
import textwrap
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.plots import plot_latency, plot_pareto
from bench.rows import CPU_RUNTIMES, CSV_COLUMNS, Row
from inference.runtimes import RUNTIMES
from inference.runtimes import title as runtime_title
from utils.io import atomic_path, write_json, write_text
from utils.machine import describe_machine, measured_on

__all__ = [
    "load_accuracy_results",
    "plot_latency",
    "plot_pareto",
    "render_markdown",
    "text_summary",
    "write_reports",
]

# --------------------------------------------------------------------------- tables and files


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: '-' for missing, fixed digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    """Whether a cell is a figure ('1,234.5', '12.0~', '-'), which a table aligns right."""
    return cell.strip("~*%x").replace(",", "").replace(".", "", 1).lstrip("-").isdigit()


def text_table(header: list[str], rows: list[list[str]], align_numbers: bool = False) -> str:
    """A plain aligned table for the terminal; with `align_numbers`, columns whose cells are
    all figures (or '-') are aligned right."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    right = [
        align_numbers
        and any(_numeric(r[i]) for r in rows)
        and all(_numeric(r[i]) or r[i] == "-" for r in rows)
        for i in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _csv_value(value: Any) -> Any:
    """Floats rounded for CSV; None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], columns: Iterable[str]) -> None:
    """Write rows (only the listed columns) as CSV atomically."""
    columns = list(columns)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in columns})


def _not_a_jetson(machine: dict[str, Any]) -> str:
    """'this CPU, not a Jetson' (or 'not a Jetson' on a GPU machine, nothing on a Jetson)."""
    if machine.get("jetson"):
        return "a Jetson"
    return "not a Jetson" if machine.get("gpus") else "this CPU, not a Jetson"


def machine_lines(meta: dict[str, Any]) -> list[str]:
    """Markdown lines naming the machine, versions, command and load."""
    m = meta["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [
        f"- Machine: {describe_machine(m)} ({m['os']}); {_not_a_jetson(m)}",
        f"- Libraries: {versions}",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date_utc']}; wall time {meta.get('wall_s', 0):.0f} s",
    ]
    other = meta.get("other_processes_cpu_pct")
    if other is not None:
        lines.append(
            f"- Other processes used {other:.0f}% of the machine's CPU time during the "
            f"run (load average at start {m.get('load_average_1_5_15min')}, at end "
            f"{[round(x, 2) for x in meta.get('load_average_end', [])]})"
            + ("; figures may be low because of them" if other > 5 else "")
        )
    return lines


def write_summary(
    out_dir: Path, stem: str, title: str, meta: dict[str, Any], rows: list[dict[str, Any]]
) -> str:
    """Write STEM.json, STEM.csv and STEM.md for flat result dicts; return the text table."""
    write_json(out_dir / f"{stem}.json", {"meta": meta, "rows": rows})
    columns = list(
        dict.fromkeys(k for r in rows for k, v in r.items() if not isinstance(v, dict | list))
    )
    write_csv(out_dir / f"{stem}.csv", rows, columns)
    if len(rows) == 1:  # one result: a field / value table reads better than one wide row
        header, cells = ["field", "value"], [[c, fmt(rows[0].get(c), 3)] for c in columns]
    else:
        header, cells = columns, [[fmt(r.get(c), 3) for c in columns] for r in rows]
    md = [f"# {title}", "", *machine_lines(meta), "", markdown_table(header, cells), ""]
    write_text(out_dir / f"{stem}.md", "\n".join(md))
    return text_table(header, cells)


# --------------------------------------------------------------------------- inference rows


def _timed(fn: Callable[[Row], str]) -> Callable[[Row], str]:
    """A cell that shows '-' unless the row was timed."""
    return lambda r: fn(r) if r.ok else "-"


def _backend_cell(row: Row) -> str:
    """The backend's table name, with NCHW when the export takes NCHW input."""
    return runtime_title(row.backend) + (" NCHW" if row.layout == "NCHW" else "")


def _trt_cell(row: Row) -> str:
    """'yes', 'no (N problems)' or '-' (no export to scan)."""
    if row.tensorrt_ready is None:
        return "-"
    return "yes" if row.tensorrt_ready else f"no ({len(row.tensorrt_problems or [])})"


def _miou_cell(row: Row) -> str:
    """mIoU in percent, or '-'."""
    return "-" if row.miou is None else f"{100 * row.miou:.1f}"


#: The inference table of the markdown page: (header, cell) per column.
TABLE_COLUMNS: tuple[tuple[str, Callable[[Row], str]], ...] = (
    ("model", lambda r: r.model),
    ("backend", _backend_cell),
    ("ran on", lambda r: r.ran_on or "-"),
    ("precision", lambda r: r.precision),
    ("input", lambda r: f"{r.height}x{r.width}"),
    ("batch", lambda r: str(r.batch)),
    ("params (M)", lambda r: fmt(r.params and r.params / 1e6, 2)),
    ("GFLOPs/img", lambda r: fmt(r.gflops, 1)),
    ("mean ms", _timed(lambda r: fmt(r.mean_ms))),
    ("median ms", _timed(lambda r: fmt(r.median_ms))),
    ("p90 ms", _timed(lambda r: fmt(r.p90_ms))),
    ("p99 ms", _timed(lambda r: fmt(r.p99_ms))),
    ("img/s", _timed(lambda r: fmt(r.images_per_s, 2))),
    ("GFLOP/s", _timed(lambda r: fmt(r.achieved_gflops_per_s, 1))),
    ("% mm peak", _timed(lambda r: fmt(r.pct_of_matmul_peak, 0))),
    ("% conv peak", _timed(lambda r: fmt(r.pct_of_peak, 0))),
    ("MB moved", lambda r: fmt(r.traffic_mb, 0)),
    ("FLOP/B", lambda r: fmt(r.arithmetic_intensity, 1)),
    ("bound by", lambda r: r.bound_by or "-"),
    ("roofline ms", _timed(lambda r: fmt(r.roofline_bound_ms))),
    ("% roofline", _timed(lambda r: fmt(r.roofline_share_pct, 0))),
    ("x TF graph", _timed(lambda r: fmt(r.speedup_vs_tf, 2))),
    ("CPU runtimes", _timed(lambda r: _cpu_runtime_cell(r))),
    ("TRT-ready", _trt_cell),
    ("mIoU %", _miou_cell),
    ("peak RSS MB", _timed(lambda r: fmt(r.peak_rss_mb, 0))),
    ("timed calls", _timed(lambda r: f"{'-' if r.iterations is None else r.iterations}")),
    ("overhead %", _timed(lambda r: fmt(r.overhead_pct, 2))),
    ("notes", lambda r: r.note),
)
TABLE_HEADER = [header for header, _ in TABLE_COLUMNS]

#: Marks in the compact table's cells.
FASTER_MARK, BUDGET_MARK = "*", "~"

#: The compact terminal table: what someone choosing a model reads first.
COMPACT_COLUMNS: tuple[tuple[str, Callable[[Row], str]], ...] = (
    ("model", lambda r: r.model),
    ("backend", lambda r: _backend_cell(r) + (FASTER_MARK if r.fastest_cpu_runtime else "")),
    ("precision", lambda r: r.precision),
    ("params (M)", lambda r: fmt(r.params and r.params / 1e6, 2)),
    ("GFLOPs/img", lambda r: fmt(r.gflops, 1)),
    (
        "median ms",
        _timed(lambda r: (BUDGET_MARK if r.budget_limited else "") + fmt(r.median_ms)),
    ),
    ("p90 ms", _timed(lambda r: fmt(r.p90_ms))),
    ("img/s", _timed(lambda r: fmt(r.images_per_s, 2))),
    ("TRT-ready", _trt_cell),
    ("mIoU %", _miou_cell),
)
#: Columns the compact table adds when the run has more than one input size or batch.
COMPACT_SHAPE_COLUMNS: tuple[tuple[str, Callable[[Row], str]], ...] = (
    ("input", lambda r: f"{r.height}x{r.width}"),
    ("batch", lambda r: str(r.batch)),
)


def column_notes(meta: Mapping[str, Any]) -> dict[str, str]:
    """What each column of the inference tables is (every header of TABLE_COLUMNS)."""
    mm, dense = meta.get("matmul_peak_gflops"), meta.get("peak_gflops")
    bandwidth, ridge = meta.get("copy_bandwidth_gbs"), meta.get("ridge_flop_per_byte")
    mm_text = f"{mm:.0f} GFLOP/s in this run" if mm else "measured in the same run"
    dense_text = f"{dense:.0f} GFLOP/s in this run" if dense else "measured in the same run"
    bw_text = f"{bandwidth:.1f} GB/s in this run" if bandwidth else "measured in the same run"
    ridge_text = f"{ridge:.1f} FLOP/byte here" if ridge else "peak / bandwidth"
    return {
        "model": "registered model name (models.MODELS), with its builder options when given",
        "backend": "the runtime (inference/runtimes): "
        + "; ".join(f"{e.title}: {e.description}" for e in RUNTIMES.values())
        + f"; NCHW when the export takes NCHW input. In the terminal table {FASTER_MARK} marks "
        f"the fastest of the CPU runtimes ({_cpu_titles()}) for the model",
        "ran on": "what actually executed the job, as its runtime reports it: onnxruntime's "
        "session.get_providers() (a job fails when onnxruntime falls back from a provider it "
        "asked for), OpenVINO's EXECUTION_DEVICES, TensorFlow's device, TensorRT's GPU",
        "precision": "the arithmetic: fp32, fp16 (a float16 export; mixed_float16 for the TF "
        "graph) or bf16 (mixed_bfloat16 for the TF graph)",
        "input": "input height x width in pixels (1024x2048 is Cityscapes' full size)",
        "batch": "images per call",
        "params (M)": "trainable parameters in millions, as papers count them (no batch-norm "
        "moving statistics)",
        "GFLOPs/img": "2 x the multiply-accumulates per image of the convolution, matmul and "
        "einsum ops of the traced graph (bench/flops.py); element-wise ops not counted",
        "mean ms": "mean latency of the timed calls (one call: one batch already in memory, "
        "output fetched)",
        "median ms": "median latency of the timed calls; every throughput column is computed "
        f"from it. In the terminal table {BUDGET_MARK} marks a budget-limited row (fewer "
        "calls or seconds than the timing rule wants; its notes say how many)",
        "p90 ms": "90th percentile of the timed calls' latency (linear interpolation)",
        "p99 ms": "99th percentile of the timed calls' latency (linear interpolation)",
        "img/s": "images per second FROM THE MEDIAN latency: 1000 x batch / median ms (before "
        "this version it came from the mean, which one slow call among many pulls down)",
        "GFLOP/s": "GFLOPs per call / median latency",
        "% mm peak": "GFLOP/s as a share of the best float32 2048x2048 matmul rate (numpy BLAS "
        f"or onnxruntime MLAS, start and end of the run: {mm_text}); CPU rows only",
        "% conv peak": "GFLOP/s as a share of the best dense rate seen in the run (those "
        "matmuls or a 3x3 256->256 onnxruntime convolution, also run for 1 s before every "
        f"job: {dense_text}); CPU rows only",
        "MB moved": "MB (1e6 bytes) one call of the exported ONNX graph reads and writes: "
        "each node's input and output tensors at the shapes of ONNX shape inference, plus the "
        "weights once (bench/roofline.py); a runtime that fuses nodes or keeps tensors in "
        "cache moves less. '-' without an export",
        "FLOP/B": "arithmetic intensity: FLOPs per call / bytes moved per call; below the "
        f"ridge point (dense peak / copy bandwidth, {ridge_text}) a call is memory-bound",
        "bound by": "memory (intensity below the ridge point: the copy bandwidth limits it) or "
        "compute (the dense peak limits it)",
        "roofline ms": "the roofline bound: max(FLOPs / dense peak, bytes moved / copy "
        f"bandwidth); the copy bandwidth is the best numpy copy of 256 MiB ({bw_text}, bytes "
        "read + written per second); the least time a call could take on this machine",
        "% roofline": "roofline ms / median ms: how close the row comes to its bound (100: at "
        "the roof). For a memory-bound model this is the honest efficiency figure, where the "
        "% of peak columns would only say that arithmetic is not what limits it. Above 100: the "
        "runtime moved fewer bytes than the graph's count (fused nodes, tensors kept in cache)",
        "x TF graph": "the TF graph's median latency / this row's (same model, size, batch); "
        "'-' when the TF graph was not timed",
        "CPU runtimes": "onnxruntime's against OpenVINO's median latency on the same file: "
        "'fastest (N.NNx)' on the faster of the two and how many times faster it is, the "
        "other row its own ratio (< 1)",
        "TRT-ready": "whether the export passed deploy/checks.py's TensorRT-construct scan "
        "(every op in TensorRT 8.4's ONNX parser support matrix, no MaxPool indices, no "
        "half-pixel nearest resize, constant conv weights, ...): 'yes', or 'no (N)' with N "
        "problems (listed in the JSON's tensorrt_problems); not an engine build",
        "mIoU %": "the model's mean IoU from an evaluate.py result or study.json in the output "
        "folder (file in the CSV's miou_source), '-' where there is none. The benchmark's own "
        "models are randomly initialised: their speed does not depend on the weights",
        "peak RSS MB": "the job's resident-set high-water mark (VmHWM, reset after the model "
        "is loaded, read after the timed loop), in a fresh process per job",
        "timed calls": "number of timed calls (after the warm-up)",
        "overhead %": "the harness's own cost per call (timing loop plus feeding: one call of "
        "a graph that reads one element of the same input through the same backend) as a "
        "share of the mean latency",
        "notes": "budget limits, harness overhead, parity with the reference runtime (rows of a "
        "runtime checked against onnxruntime), slow spots and onnxruntime's time by op type "
        "where profiled",
    }


def _cpu_titles() -> str:
    """The CPU runtimes' table names, in words."""
    return " and ".join(runtime_title(n) for n in CPU_RUNTIMES)


def _cpu_runtime_cell(row: Row) -> str:
    """'fastest (1.62x)' on the fastest CPU runtime of the model, '0.62x' on the others (the
    fastest other's median over this row's)."""
    ratio = row.speedup_vs_other_cpu_runtime
    if ratio is None:
        return "-"
    return f"fastest ({ratio:.2f}x)" if row.fastest_cpu_runtime else f"{ratio:.2f}x"


def _cpu_runtime_lines(rows: list[Row]) -> list[str]:
    """The section that sets the CPU runtimes of the same ONNX file side by side, model by
    model."""
    groups: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        if r.backend in CPU_RUNTIMES and r.speedup_vs_other_cpu_runtime is not None:
            groups.setdefault(r.group, {})[r.backend] = r
    present = [n for n in CPU_RUNTIMES if any(n in g for g in groups.values())]
    if len(present) < 2:
        return []
    names = [runtime_title(n) for n in present]
    lines = [
        f"## CPU runtimes: {' and '.join(names)} on the same ONNX file",
        "",
        "Median latency of each, and the fastest; the ratio is the slowest median over the "
        "fastest. The machine's speed just before each job (1-second convolution, GFLOP/s) "
        "shows when other processes slowed one of them.",
        "",
    ]
    header = ["model", "input", *(f"{n} ms" for n in names), "ratio", "fastest",
              f"conv GFLOP/s before ({' / '.join(names)})"]  # fmt: skip
    cells = []
    for (model, h, w, _), group in groups.items():
        timed = [group.get(n) for n in present]
        if any(r is None for r in timed):
            continue
        fastest = min(timed, key=lambda r: r.median_ms)
        slowest = max(timed, key=lambda r: r.median_ms)
        cells.append(
            [
                model,
                f"{h}x{w}",
                *(fmt(r.median_ms) for r in timed),
                f"{slowest.median_ms / fastest.median_ms:.2f}",
                runtime_title(fastest.backend),
                " / ".join(fmt(r.conv_gflops_before, 0) for r in timed),
            ]
        )
    return [*lines, markdown_table(header, cells), ""]


def row_cells(row: Row) -> list[str]:
    """One row's cells of the markdown table."""
    return [cell(row) for _, cell in TABLE_COLUMNS]


def _rows(report: Mapping[str, Any]) -> list[Row]:
    """A report's rows as Row (a report read back from JSON holds dicts)."""
    return [r if isinstance(r, Row) else Row.from_dict(r) for r in report["rows"]]


def write_reports(report: Mapping[str, Any], out_dir: Path, stem: str) -> dict[str, Path]:
    """Write STEM.json, STEM.csv, STEM.md and STEM.png, and STEM_accuracy.png when the folder
    holds mIoU results (which every row of their model then carries, see add_accuracy)."""
    meta, rows = report["meta"], _rows(report)
    add_accuracy(rows, out_dir)  # Row objects of a live report carry it on to text_summary
    paths = {ext: out_dir / f"{stem}.{ext}" for ext in ("json", "csv", "md", "png")}
    write_json(paths["json"], {"meta": meta, "rows": [r.as_dict() for r in rows]})
    write_csv(paths["csv"], (r.as_dict() for r in rows), CSV_COLUMNS)
    write_text(paths["md"], render_markdown(meta, rows))
    machine = measured_on(meta["machine"])
    plot_latency(rows, paths["png"], meta["settings"]["precision"], machine)
    accuracy = plot_accuracy(rows, out_dir / f"{stem}_accuracy.png", machine)
    if accuracy is not None:
        paths["accuracy_png"] = accuracy
    return paths


def _peak_text(p: dict[str, Any]) -> str:
    """The dense-peak kernels' best and median GFLOP/s in words."""
    names = {
        "numpy": "numpy matmul",
        "onnxruntime": "onnxruntime matmul",
        "onnxruntime_conv": "onnxruntime conv",
    }
    return ", ".join(
        f"{names[b]} {p[b]['best_gflops']:.0f} (median {p[b]['median_gflops']:.0f})"
        for b in names
        if b in p
    )


def _bandwidth_line(meta: Mapping[str, Any]) -> list[str]:
    """The copy-bandwidth bullet of the markdown page (absent in results of older versions)."""
    start, end = meta.get("copy_bandwidth_start"), meta.get("copy_bandwidth_end")
    if not start or not end:
        return []
    return [
        f"- Copy bandwidth, best GB/s (numpy copy of {start['mib']} MiB, bytes read + written, "
        f"1 and {start['threads']} threads): start {start['best_gbs']:.1f} (median "
        f"{start['median_gbs']:.1f}), end {end['best_gbs']:.1f} (median "
        f"{end['median_gbs']:.1f}). The roofline uses {meta['copy_bandwidth_gbs']:.1f} GB/s "
        f"and the dense peak {meta['peak_gflops']:.0f} GFLOP/s: ridge point "
        f"{meta['ridge_flop_per_byte']:.1f} FLOP/byte"
    ]


def _profile_lines(rows: list[Row]) -> list[str]:
    """The section on where onnxruntime spends the time, for profiled rows."""
    profiled = [r for r in rows if r.profile]
    if not profiled:
        return []
    lines = ["## Where onnxruntime spends the time", ""]
    for r in profiled:
        p = r.profile
        ops = ", ".join(f"{o['op']} {o['pct']:.1f}%" for o in p["by_op_type"][:8])
        nodes = "; ".join(f"{n['node']} ({n['op']}) {n['pct']:.1f}%" for n in p["top_nodes"][:6])
        lines += [f"- **{r.model}** {r.height}x{r.width}: {ops}. Top nodes: {nodes}"]
    lines.append("")
    return lines


def render_markdown(meta: dict[str, Any], rows: list[Row]) -> str:
    """The markdown page of an inference benchmark: machine, peaks, the full table, column
    notes, conventions, the CPU runtimes side by side and the profiles."""
    s = meta["settings"]
    ps, pe = meta["peak_start"], meta["peak_end"]
    during = meta.get("peak_during_gflops") or []
    versions = {runtime_title(r.backend): r.runtime_version for r in rows if r.runtime_version}
    ran = ", ".join(f"{k} {v}" for k, v in versions.items())
    notes = column_notes(meta)
    lines = [
        "# Inference benchmark",
        "",
        *machine_lines(meta),
        f"- Dense peak, best GFLOP/s (float32 {ps['n']}x{ps['n']} matmul; conv {ps['conv']}):"
        f" start {_peak_text(ps)}; end {_peak_text(pe)}"
        + (f"; conv before each job {min(during):.0f}-{max(during):.0f}" if during else "")
        + f". % mm peak uses {meta['matmul_peak_gflops']:.0f}, % conv peak uses "
        f"{meta['peak_gflops']:.0f}",
        *_bandwidth_line(meta),
        f"- Timing: warm-up {s['warmup_s']} s (>= 1 call), then >= {s['min_iters']} calls "
        f"and >= {s['min_duration_s']} s per job unless the {s['budget_s']:.0f} s budget "
        "stops it first (see notes); generated input, no data set",
        *([f"- Runtimes that ran: {ran}"] if ran else []),
        "",
        markdown_table(TABLE_HEADER, [row_cells(r) for r in rows]),
        "",
        "## Columns",
        "",
        *(f"- **{header}**: {notes[header]}" for header in TABLE_HEADER),
        "",
        f"Conventions: {meta['conventions']}",
        "",
    ]
    return "\n".join(lines + _cpu_runtime_lines(rows) + _profile_lines(rows))


def _wrapped(text: str, width: int = 118, indent: str = "") -> list[str]:
    """A long terminal line wrapped to `width` columns."""
    return textwrap.wrap(text, width, subsequent_indent=indent or "  ") or [""]


def compact_table(rows: list[Row]) -> str:
    """The compact terminal table (COMPACT_COLUMNS; input and batch when the run has several)."""
    columns = list(COMPACT_COLUMNS)
    if len({(r.height, r.width, r.batch) for r in rows}) > 1:
        columns[1:1] = COMPACT_SHAPE_COLUMNS
    header = [h for h, _ in columns]
    return text_table(header, [[cell(r) for _, cell in columns] for r in rows], align_numbers=True)


def text_summary(report: Mapping[str, Any], paths_stem: Path) -> str:
    """What the terminal shows: the machine, the compact table and its marks, rows that failed,
    the peaks and where the full table (every column, explained) went."""
    rows, meta = _rows(report), report["meta"]
    shapes = sorted({(r.height, r.width, r.batch) for r in rows})
    shape_text = (
        f"{shapes[0][0]}x{shapes[0][1]}, batch {shapes[0][2]}"
        if len(shapes) == 1
        else "sizes below"
    )
    lines = _wrapped(
        f"Inference, {shape_text}, {meta['settings']['precision']}: {measured_on(meta['machine'])}"
    )
    lines += ["", compact_table(rows), ""]
    marks = []
    if any(r.fastest_cpu_runtime for r in rows):
        marks.append(f"{FASTER_MARK} the fastest of {_cpu_titles()} for the model")
    if any(r.ok and r.budget_limited for r in rows):
        marks.append(f"{BUDGET_MARK} budget-limited (fewer calls than the timing rule wants)")
    marks.append("img/s from the median")
    marks.append("TRT-ready: passes the TensorRT-construct scan (deploy/checks.py)")
    if not any(r.miou is not None for r in rows):
        marks.append(f"mIoU: no evaluate.py result or study.json in {paths_stem.parent}")
    lines += _wrapped("; ".join(marks))
    for r in rows:
        if not r.ok:
            lines += _wrapped(f"{r.model} / {r.backend}: {r.status}")
    bandwidth = meta.get("copy_bandwidth_gbs")
    lines += _wrapped(
        f"peak GFLOP/s: matmul {meta['matmul_peak_gflops']:.1f}, dense (conv) "
        f"{meta['peak_gflops']:.1f}"
        + (f"; copy bandwidth {bandwidth:.1f} GB/s" if bandwidth else "")
        + f"; every column, explained, with notes, in {paths_stem}.md; also .csv .json .png"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- accuracy


def _miou_fraction(value: Any) -> float | None:
    """An mIoU as a 0..1 fraction (a value in 1..100 is taken as percent); None if unreadable."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    if not 0.0 <= value <= 100.0:
        return None
    return value / 100.0 if value > 1.0 else value


def accuracy_results(folder: Path) -> dict[str, tuple[float, str]]:
    """{model: (mIoU as a 0..1 fraction, file name)} from the results in `folder`: study.json
    ({"rows": [{"model", "miou"}, ...]}; a model on several rows keeps its best) and
    evaluate.py JSONs (averageScoreClasses), which win over the study for the same model."""
    found: dict[str, tuple[float, str]] = {}
    study = folder / "study.json"
    try:
        data = json.loads(study.read_text()) if study.is_file() else {}
    except (OSError, ValueError):
        data = {}
    for row in (data.get("rows") or []) if isinstance(data, dict) else []:
        miou = _miou_fraction(row.get("miou")) if isinstance(row, dict) else None
        if miou is not None and row.get("model"):
            model = str(row["model"])
            if model not in found or miou > found[model][0]:
                found[model] = (miou, study.name)
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith(("benchmark", "models")) or path.name == study.name:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "averageScoreClasses" not in data:
            continue
        model = data.get("model") or (data.get("meta") or {}).get("model") or path.stem
        miou = _miou_fraction(data["averageScoreClasses"])
        if miou is not None:
            found[str(model)] = (miou, path.name)
    return found


def load_accuracy_results(folder: Path) -> dict[str, float]:
    """mIoU (0..1) per model from evaluate.py results and study.json in `folder`."""
    return {model: miou for model, (miou, _) in accuracy_results(folder).items()}


def add_accuracy(rows: list[Row], folder: Path) -> None:
    """Give every row whose model (its label or registered name) has an mIoU result in
    `folder` that mIoU and the file it came from."""
    found = accuracy_results(folder)
    for row in rows:
        match = found.get(row.model) or found.get(row.name)
        if match is not None:
            row.miou, row.miou_source = match


def plot_accuracy(rows: list[Row], path: Path, machine_text: str) -> Path | None:
    """mIoU against the fastest timed median latency per model, the Pareto front marked, for
    the models whose rows carry an mIoU (add_accuracy); None when none do."""
    points: dict[str, tuple[str, float, float]] = {}
    for r in rows:
        if r.ok and r.miou is not None:
            best = points.get(r.model)
            if best is None or r.median_ms < best[1]:
                points[r.model] = (r.model, r.median_ms, r.miou)
    if not points:
        return None
    sizes = sorted({f"{r.height}x{r.width} b{r.batch}" for r in rows if r.ok})
    return plot_pareto(
        list(points.values()),
        path,
        f"mIoU against latency ({', '.join(sizes)}, fastest backend per model)",
        machine_text,
    )
