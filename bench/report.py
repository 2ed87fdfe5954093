"""Reports of the benchmarks: markdown and text tables, CSV, JSON, plots and machine lines."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.rows import BACKEND_NAMES, CPU_RUNTIMES, CSV_COLUMNS, Row
from utils.io import atomic_path, write_json, write_text
from utils.machine import describe_machine

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


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain aligned table for the terminal."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
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


def machine_lines(meta: dict[str, Any]) -> list[str]:
    """Markdown lines naming the machine, versions, command and load."""
    m = meta["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [
        f"- Machine: {describe_machine(m)} ({m['os']})",
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


#: The inference table: (header, cell) per column, the same for markdown and the terminal.
TABLE_COLUMNS: tuple[tuple[str, Callable[[Row], str]], ...] = (
    ("model", lambda r: r.model),
    (
        "backend",
        lambda r: BACKEND_NAMES.get(r.backend, r.backend) + (" NCHW" if r.layout == "NCHW" else ""),
    ),
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
    ("x TF graph", _timed(lambda r: fmt(r.speedup_vs_tf, 2))),
    ("CPU runtimes", _timed(lambda r: _cpu_runtime_cell(r))),
    ("peak RSS MB", _timed(lambda r: fmt(r.peak_rss_mb, 0))),
    ("timed calls", _timed(lambda r: f"{'-' if r.iterations is None else r.iterations}")),
    ("overhead %", _timed(lambda r: fmt(r.overhead_pct, 2))),
    ("notes", lambda r: r.note),
)
TABLE_HEADER = [header for header, _ in TABLE_COLUMNS]


def _cpu_runtime_cell(row: Row) -> str:
    """'fastest (1.62x)' on the faster of onnxruntime and OpenVINO, '0.62x' on the other."""
    ratio = row.speedup_vs_other_cpu_runtime
    if ratio is None:
        return "-"
    return f"fastest ({ratio:.2f}x)" if row.fastest_cpu_runtime else f"{ratio:.2f}x"


def _cpu_runtime_lines(rows: list[Row]) -> list[str]:
    """The section that sets onnxruntime and OpenVINO side by side, model by model."""
    pairs: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        if r.backend in CPU_RUNTIMES and r.speedup_vs_other_cpu_runtime is not None:
            pairs.setdefault(r.group, {})[r.backend] = r
    if not pairs:
        return []
    lines = [
        "## CPU runtimes: onnxruntime and OpenVINO on the same ONNX file",
        "",
        "Median latency of each; the ratio is onnxruntime's over OpenVINO's (> 1: OpenVINO is "
        "faster). The machine's speed just before each job (1-second convolution, GFLOP/s) "
        "shows when other processes slowed one of the two.",
        "",
    ]
    header = ["model", "input", "onnxruntime ms", "OpenVINO ms", "ratio", "faster",
              "conv GFLOP/s before (ORT / OV)"]  # fmt: skip
    cells = []
    for (model, h, w, _), pair in pairs.items():
        ort, ov = pair.get("onnxruntime"), pair.get("openvino")
        if ort is None or ov is None:
            continue
        ratio = ort.median_ms / ov.median_ms
        cells.append(
            [
                model,
                f"{h}x{w}",
                fmt(ort.median_ms),
                fmt(ov.median_ms),
                f"{ratio:.2f}",
                "OpenVINO" if ratio >= 1.0 else "onnxruntime",
                f"{fmt(ort.conv_gflops_before, 0)} / {fmt(ov.conv_gflops_before, 0)}",
            ]
        )
    return [*lines, markdown_table(header, cells), ""]


def row_cells(row: Row) -> list[str]:
    """One table row's cells."""
    return [cell(row) for _, cell in TABLE_COLUMNS]


def _rows(report: Mapping[str, Any]) -> list[Row]:
    """A report's rows as Row (a report read back from JSON holds dicts)."""
    return [r if isinstance(r, Row) else Row.from_dict(r) for r in report["rows"]]


def write_reports(report: Mapping[str, Any], out_dir: Path, stem: str) -> dict[str, Path]:
    """Write STEM.json, STEM.csv, STEM.md and STEM.png (and the accuracy plot when possible)."""
    meta, rows = report["meta"], _rows(report)
    paths = {ext: out_dir / f"{stem}.{ext}" for ext in ("json", "csv", "md", "png")}
    write_json(paths["json"], {"meta": meta, "rows": [r.as_dict() for r in rows]})
    write_csv(paths["csv"], (r.as_dict() for r in rows), CSV_COLUMNS)
    write_text(paths["md"], render_markdown(meta, rows))
    plot_latency(rows, paths["png"], meta)
    accuracy = plot_accuracy(rows, out_dir, out_dir / f"{stem}_accuracy.png")
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
    """The markdown page of an inference benchmark."""
    s = meta["settings"]
    ps, pe = meta["peak_start"], meta["peak_end"]
    during = meta.get("peak_during_gflops") or []
    versions = {
        BACKEND_NAMES.get(r.backend, r.backend): r.runtime_version
        for r in rows
        if r.runtime_version
    }
    ran = ", ".join(f"{k} {v}" for k, v in versions.items())
    lines = [
        "# Inference benchmark",
        "",
        *machine_lines(meta),
        f"- Dense peak, best GFLOP/s (float32 {ps['n']}x{ps['n']} matmul; conv {ps['conv']}):"
        f" start {_peak_text(ps)}; end {_peak_text(pe)}"
        + (f"; conv before each job {min(during):.0f}-{max(during):.0f}" if during else "")
        + f". % mm peak uses {meta['matmul_peak_gflops']:.0f}, % conv peak uses "
        f"{meta['peak_gflops']:.0f}",
        f"- Timing: warm-up {s['warmup_s']} s (>= 1 call), then >= {s['min_iters']} calls "
        f"and >= {s['min_duration_s']} s per job unless the {s['budget_s']:.0f} s budget "
        "stops it first (see notes); generated input, no data set",
        *([f"- Runtimes that ran: {ran}"] if ran else []),
        "",
        markdown_table(TABLE_HEADER, [row_cells(r) for r in rows]),
        "",
        f"Conventions: {meta['conventions']}",
        "",
    ]
    return "\n".join(lines + _cpu_runtime_lines(rows) + _profile_lines(rows))


def text_summary(report: Mapping[str, Any], paths_stem: Path) -> str:
    """The terminal table, each row's notes, the peaks and where the files went."""
    rows = _rows(report)
    lines = [text_table(TABLE_HEADER[:-1], [row_cells(r)[:-1] for r in rows])]
    lines += [f"  {r.model} / {r.backend}: {r.note}" for r in rows if r.note]
    meta = report["meta"]
    lines.append(
        f"peak GFLOP/s: matmul {meta['matmul_peak_gflops']:.1f}, dense (conv) "
        f"{meta['peak_gflops']:.1f}; results in {paths_stem}.{{md,csv,json,png}}"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend."""
    # Imported here: only the report writers need matplotlib.
    import matplotlib

    matplotlib.use("Agg")
    # matplotlib only when drawing
    import matplotlib.pyplot as plt

    return plt


def plot_latency(rows: list[Row], path: Path, meta: dict[str, Any]) -> None:
    """Bar chart of median latency per model and backend, one panel per input size and batch."""
    plt = _pyplot()
    ok = [r for r in rows if r.ok]
    panels = sorted({(r.height, r.width, r.batch) for r in ok}) or [(0, 0, 0)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.8 * len(panels)), squeeze=False)
    for ax, (h, w, b) in zip(axes[:, 0], panels, strict=True):
        sub = [r for r in ok if (r.height, r.width, r.batch) == (h, w, b)]
        models = list(dict.fromkeys(r.model for r in sub))
        backends = list(dict.fromkeys(r.backend for r in sub))
        width = 0.8 / max(1, len(backends))
        for i, backend in enumerate(backends):
            xs, ys = [], []
            for j, model in enumerate(models):
                match = [r for r in sub if r.model == model and r.backend == backend]
                if match:
                    xs.append(j + i * width)
                    ys.append(match[0].median_ms)
            ax.bar(xs, ys, width, label=BACKEND_NAMES.get(backend, backend))
        ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(models))])
        ax.set_xticklabels(models, rotation=20, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("median latency (ms, log)")
        ax.set_title(f"{h}x{w}, batch {b}, {meta['settings']['precision']}")
        if backends:
            ax.legend()
    fig.suptitle(f"Inference latency: {describe_machine(meta['machine'])}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def load_accuracy_results(folder: Path) -> dict[str, float]:
    """mIoU per model from evaluate.py JSON results in `folder` (files with averageScoreClasses)."""
    found: dict[str, float] = {}
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith(("benchmark", "models")):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "averageScoreClasses" not in data:
            continue
        model = data.get("model") or (data.get("meta") or {}).get("model") or path.stem
        try:
            found[str(model)] = float(data["averageScoreClasses"])
        except (TypeError, ValueError):
            continue
    return found


def plot_accuracy(rows: list[Row], folder: Path, path: Path) -> Path | None:
    """mIoU against images/s (fastest backend) for models with evaluate.py results; else None."""
    accuracy = load_accuracy_results(folder)
    points = []
    for model, miou in accuracy.items():
        speeds = [r.images_per_s for r in rows if r.ok and model in (r.model, r.name)]
        if speeds:
            points.append((model, max(speeds), miou))
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for model, speed, miou in points:
        ax.scatter(speed, 100 * miou if miou <= 1 else miou)
        ax.annotate(model, (speed, 100 * miou if miou <= 1 else miou))
    ax.set_xscale("log")
    ax.set_xlabel("images/s (fastest backend in this run)")
    ax.set_ylabel("mIoU (%) from evaluate.py")
    ax.set_title("Accuracy against speed", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
