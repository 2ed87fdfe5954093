"""Robustness to corruptions as Cityscapes-C reports it (Kamann and Rother, CVPR 2020).

From the clean mIoU and the mIoU of each corruption at each severity (`datasets.corruptions`,
the validation images corrupted with fixed seeds and scored with the official metrics):

- the mean corruption mIoU: the mean over every corruption and severity evaluated;
- the relative robustness: mean corruption mIoU / clean mIoU (1: no loss under corruption).

`robustness_summary` gives what evaluate.py writes as ``robustness.json`` (mIoU as fractions
0..1, like the official JSON; NaN written as null), `robustness_markdown` its section of
evaluation.md, and `plot_robustness` the plot of mIoU against severity. NumPy only; matplotlib
is imported by the plot alone.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from utils.io import atomic_path

__all__ = ["ROBUSTNESS_JSON", "ROBUSTNESS_PLOT", "plot_robustness", "robustness_summary"]

ROBUSTNESS_JSON = "robustness.json"
ROBUSTNESS_PLOT = "robustness.png"


def _clean(value: float) -> float | None:
    """A finite float, or None (null in JSON) for NaN."""
    value = float(value)
    return value if math.isfinite(value) else None


def robustness_summary(
    clean_miou: float,
    miou: Mapping[str, Mapping[int, float]],
    seed: int,
    severities: Sequence[int],
) -> dict[str, Any]:
    """The ``robustness.json`` record.

    Args:
        clean_miou: mIoU (``averageScoreClasses``) on the clean images.
        miou: corruption -> severity -> mIoU on the images under it.
        seed: the base seed of the corruptions (`datasets.corruptions.corruption_seed`).
        severities: the severities evaluated (each corruption has all of them).

    Returns:
        {"clean_miou", "mean_corruption_miou", "relative_robustness", "seed", "severities",
        "miou": {corruption: {"1": mIoU, ...}}}; means over the finite values, None where
        there is none (or the clean mIoU is 0 or None).
    """
    severities = [int(s) for s in severities]
    for name, by_severity in miou.items():
        if sorted(int(s) for s in by_severity) != sorted(severities):
            raise ValueError(
                f"corruption {name!r} has severities {sorted(by_severity)}, expected {severities}"
            )
    values = [float(v) for by in miou.values() for v in by.values() if math.isfinite(float(v))]
    mean = sum(values) / len(values) if values else math.nan
    clean = float(clean_miou)
    relative = mean / clean if math.isfinite(clean) and clean > 0 else math.nan
    return {
        "clean_miou": _clean(clean),
        "mean_corruption_miou": _clean(mean),
        "relative_robustness": _clean(relative),
        "seed": int(seed),
        "severities": severities,
        "miou": {name: {str(s): _clean(by[s]) for s in severities} for name, by in miou.items()},
    }


def _pct(value: float | None) -> str:
    """mIoU as a percentage with one decimal ('-' for None)."""
    return "-" if value is None else f"{100 * value:.1f}"


def robustness_markdown(summary: Mapping[str, Any]) -> str:
    """The robustness section of evaluation.md: mIoU (%) per corruption and severity."""
    severities = summary["severities"]
    lines = [
        "## Robustness to corruptions",
        "",
        f"- clean mIoU {_pct(summary['clean_miou'])} %, mean corruption mIoU "
        f"{_pct(summary['mean_corruption_miou'])} % (over {len(summary['miou'])} corruptions x "
        f"{len(severities)} severities), relative robustness "
        + (
            "-"
            if summary["relative_robustness"] is None
            else f"{summary['relative_robustness']:.3f}"
        )
        + " (mean corruption mIoU / clean mIoU, as Cityscapes-C: Kamann and Rother, CVPR 2020)",
        f"- corruptions of datasets/corruptions.py (albumentations), base seed {summary['seed']}",
        "",
        "| corruption | " + " | ".join(f"severity {s}" for s in severities) + " | mean |",
        "|---|" + "---:|" * (len(severities) + 1),
    ]
    for name, by in summary["miou"].items():
        finite = [v for v in by.values() if v is not None]
        mean = sum(finite) / len(finite) if finite else None
        cells = " | ".join(_pct(by[str(s)]) for s in severities)
        lines.append(f"| {name} | {cells} | {_pct(mean)} |")
    return "\n".join(lines) + "\n"


def plot_robustness(summary: Mapping[str, Any], path: str | os.PathLike, title: str) -> None:
    """mIoU (%) against severity, one line per corruption, the clean mIoU as a dashed line at
    every severity (and its point at severity 0); linear y axis from 0. Written atomically."""
    # matplotlib only when drawing
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    severities = summary["severities"]
    fig = Figure(figsize=(8.0, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = [f"C{k}" for k in range(10)]
    markers = "osD^v<>ph*"
    top = 0.0
    for k, (name, by) in enumerate(summary["miou"].items()):
        ys = [math.nan if by[str(s)] is None else 100 * by[str(s)] for s in severities]
        ax.plot(severities, ys, color=colours[k % 10], marker=markers[k % 10], ms=4, label=name)
        top = max([top, *(y for y in ys if math.isfinite(y))])
    clean = summary["clean_miou"]
    if clean is not None:
        ax.axhline(100 * clean, color="black", linestyle="--", linewidth=1.2, label="clean")
        ax.plot([0], [100 * clean], color="black", marker="o", ms=5)
        top = max(top, 100 * clean)
    ax.set_xticks([0, *severities])
    ax.set_xticklabels(["clean", *(str(s) for s in severities)])
    ax.set_xlim(-0.3, max(severities) + 0.3)
    ax.set_ylim(0, max(1.0, top * 1.1))
    ax.set_xlabel("corruption severity")
    ax.set_ylabel("mIoU (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title("\n".join(textwrap.wrap(title, 75)), fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
