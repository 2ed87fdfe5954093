"""The `models` benchmark: parameters and compute of each model variant beside its published figures.

The published figures come from the registry (`ModelInfo.published_for`, keyed by variant);
the variants listed by default are `ModelInfo.variants()` (the default first).
"""

from __future__ import annotations

import dataclasses
import gc
import os
from pathlib import Path
from typing import Any

from bench.latency import utc_now
from bench.report import fmt, markdown_table, text_table, write_csv
from bench.rows import spec_label
from utils.io import check_writable_dir, write_json, write_text
from utils.machine import describe_machine, machine_info

CONVENTIONS = (
    "params: trainable parameters (no batch-norm moving statistics, no "
    "auxiliary heads), as papers and PyTorch count them. GMACs: "
    "multiply-accumulates of conv/matmul/einsum ops of the traced "
    "inference graph (bench/flops.py); GFLOPs = 2 x GMACs; element-wise "
    "ops not counted. Published compute is in G multiply-adds."
)


@dataclasses.dataclass
class ModelRow:
    """One model variant's size and compute at one input size, beside the published figures."""

    #: The model column: the registered name with its options (see bench.rows.spec_label).
    model: str
    name: str
    options: dict[str, Any]
    height: int
    width: int
    reference_params: float | None
    #: Published G multiply-adds at 1024x2048.
    reference_gmacs: float | None
    reference_source: str
    status: str = "pending"
    #: Trainable parameters, and all of them (with batch-norm statistics).
    params: int | None = None
    total_params: int | None = None
    gmacs: float | None = None
    gflops: float | None = None
    macs_by_op: dict[str, int] | None = None
    #: Counted ops whose shapes were not static (their MACs are missing).
    uncounted: list[str] | None = None
    params_diff_pct: float | None = None
    gmacs_diff_pct: float | None = None


CSV_COLUMNS = (
    "model",
    "name",
    "height",
    "width",
    "status",
    "params",
    "total_params",
    "reference_params",
    "params_diff_pct",
    "gmacs",
    "gflops",
    "reference_gmacs",
    "gmacs_diff_pct",
    "reference_source",
)
HEADER = [
    "model",
    "params (M)",
    "published (M)",
    "diff %",
    "GMACs",
    "GFLOPs",
    "published GMACs",
    "source / status",
]


def default_specs() -> list[tuple[str, dict[str, Any]]]:
    """Every registered model with each of its variants (the default first)."""
    # The registry imports Keras.
    from models import MODELS, get_info

    return [(name, opts) for name in MODELS for opts in get_info(name).variants()]


def describe_models(specs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One line per model named in `specs`: size multiple, normalisation, options, recipe."""
    from models import get_info  # the registry imports Keras

    lines = []
    for name in dict.fromkeys(n for n, _ in specs):
        info = get_info(name)
        r = info.recipe
        lines.append(
            f"{name:15s} multiple of {info.size_multiple:3d}, normalisation "
            f"{info.normalization:8s}, options {', '.join(info.options) or '-'}; recipe "
            f"{r.optimizer} lr {r.learning_rate} crop {r.crop_size[0]}x{r.crop_size[1]} "
            f"batch {r.batch_size}"
        )
    return lines


def measure_model(name: str, opts: dict[str, Any], size: tuple[int, int]) -> ModelRow:
    """Build one variant (float32) and count its parameters and compute at `size`."""
    # Keras, the registry and the compute counter: only --params builds models.
    import keras

    # models imports Keras: only on the paths that build one
    from bench.flops import model_macs
    from models import build_model, count_params, get_info

    height, width = size
    published = get_info(name).published_for(opts)
    row = ModelRow(
        model=spec_label(name, opts),
        name=name,
        options=opts,
        height=height,
        width=width,
        reference_params=published.params,
        reference_gmacs=published.gmacs,
        reference_source=published.source,
    )
    try:
        keras.mixed_precision.set_global_policy("float32")
        model = build_model(name, (height, width, 3), **opts)
        compute = model_macs(model, (height, width), 1)
        row.status = "ok"
        row.params = count_params(model)
        row.total_params = int(model.count_params())
        row.gmacs, row.gflops = compute.gmacs, compute.gflops
        row.macs_by_op, row.uncounted = compute.by_op, compute.unknown_shapes
        del model
    except Exception as exc:  # one broken model must not hide the others' figures
        row.status = f"error: {type(exc).__name__}: {exc}"
    keras.backend.clear_session()
    gc.collect()
    if row.params and row.reference_params:
        row.params_diff_pct = 100.0 * (row.params - row.reference_params) / row.reference_params
    if row.gmacs and row.reference_gmacs:
        row.gmacs_diff_pct = 100.0 * (row.gmacs - row.reference_gmacs) / row.reference_gmacs
    return row


def table_cells(rows: list[ModelRow]) -> list[list[str]]:
    """The cells of the models table (HEADER); the last is the source, or the error."""
    return [
        [
            r.model,
            fmt(r.status == "ok" and r.params / 1e6 or None, 3),
            fmt(r.reference_params and r.reference_params / 1e6, 2),
            fmt(r.params_diff_pct, 1),
            fmt(r.gmacs, 1),
            fmt(r.gflops, 1),
            fmt(r.reference_gmacs, 1),
            r.reference_source if r.status == "ok" else r.status,
        ]
        for r in rows
    ]


def text_summary(rows: list[ModelRow]) -> str:
    """The terminal table, then each row's source or error on a line of its own."""
    cells = table_cells(rows)
    lines = [text_table(HEADER[:-1], [c[:-1] for c in cells])]
    lines += [f"  {c[0]}: {c[-1]}" for c in cells]
    return "\n".join(lines)


def write_models(
    rows: list[ModelRow], size: tuple[int, int], command: str, out_dir: Path
) -> dict[str, Any]:
    """Write models.{json,csv,md} in `out_dir`; returns the meta written with them."""
    height, width = size
    machine = machine_info()
    meta = {
        "command": command,
        "machine": machine,
        "date_utc": utc_now(),
        "size": [height, width],
        "batch": 1,
        "conventions": CONVENTIONS,
    }
    md = [
        "# Model sizes and compute",
        "",
        f"- Input {height}x{width}, batch 1, float32; {meta['conventions']}",
        f"- Machine: {describe_machine(machine)}",
        f"- Command: `{meta['command']}` ({meta['date_utc']})",
        "- Libraries: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()),
        "",
        markdown_table(HEADER, table_cells(rows)),
        "",
    ]
    dicts = [dataclasses.asdict(r) for r in rows]
    write_json(out_dir / "models.json", {"meta": meta, "rows": dicts})
    write_csv(out_dir / "models.csv", dicts, CSV_COLUMNS)
    write_text(out_dir / "models.md", "\n".join(md))
    return meta


def run_models(
    specs: list[tuple[str, dict[str, Any]]] | None,
    size: tuple[int, int],
    output_dir: str | os.PathLike,
    command: str = "",
) -> list[ModelRow]:
    """Count parameters and compute of each (name, options) and write models.{md,csv,json}.

    Args:
        specs: the variants to count; None: every registered model and its variants.
        size: (H, W) of the input the compute is counted at.
        output_dir: folder of the result files.
        command: the command that reproduces the run (written into the results).
    """
    out_dir = check_writable_dir(output_dir)
    rows = [measure_model(name, opts, size) for name, opts in (specs or default_specs())]
    write_models(rows, size, command, out_dir)
    return rows
