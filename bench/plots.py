"""The benchmark's plots: latency per model and backend, and accuracy against latency.

Rules every plot keeps: the title fits the figure at the size it is written (long lines are
wrapped to the figure's width), values are written on the bars, axes are linear from zero
unless the values span more than LOG_SPREAD times (then the axis is logarithmic and its label
says so), and the machine that measured the figures is named on the figure.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.rows import Row
from inference.runtimes import title as runtime_title
from utils.io import atomic_path

#: Largest max/min ratio of the plotted values that a linear axis from zero still shows: for
#: bars, which carry their values; for dots, whose position is all they show, a smaller one.
LOG_SPREAD = 100.0
DOT_LOG_SPREAD = 10.0
#: Written resolution of every plot.
DPI = 110
#: (label, latency in ms, mIoU as a 0..1 fraction): one model on the accuracy plot.
Point = tuple[str, float, float]


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend."""
    # Imported here: only the report writers need matplotlib.
    import matplotlib

    matplotlib.use("Agg")
    # matplotlib only when drawing
    import matplotlib.pyplot as plt

    return plt


def needs_log(values: Sequence[float], spread: float = LOG_SPREAD) -> bool:
    """Whether positive values span more than `spread` times (a linear axis would flatten the
    small ones)."""
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) / min(positive) > spread


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """`text` wrapped to the characters a line of `width_in` inches holds at `fontsize`."""
    # An average glyph of DejaVu Sans is about 0.6 of the font size wide (1 pt = 1/72 inch).
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars))


def _save(fig: Any, path: Path) -> None:
    """Write the figure atomically at DPI and close it."""
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)


def _value_axis(
    ax: Any, values: list[float], axis: str, label: str, spread: float = LOG_SPREAD
) -> bool:
    """Linear from zero (or log when needs_log) with room for the value labels; the axis label
    says 'log scale' when it is one. Returns whether the axis is logarithmic."""
    top = max(values) if values else 1.0
    log = needs_log(values, spread)
    set_scale, set_lim, set_label = (
        (ax.set_xscale, ax.set_xlim, ax.set_xlabel)
        if axis == "x"
        else (ax.set_yscale, ax.set_ylim, ax.set_ylabel)
    )
    if log:
        # matplotlib only when drawing
        from matplotlib.ticker import FuncFormatter, LogLocator

        set_scale("log")
        set_lim(min(v for v in values if v > 0) / 1.6, top * 2.5)
        set_label(f"{label} (log scale)")
        scale_axis = ax.xaxis if axis == "x" else ax.yaxis
        scale_axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        scale_axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.6g}"))
        scale_axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    else:
        set_lim(0, top * 1.22)
        set_label(label)
    return log


def plot_latency(rows: list[Row], path: Path, precision: str, machine_text: str) -> None:
    """Horizontal bars of median latency per model and backend, one panel per input size and
    batch, each bar labelled with its value; rows that were not timed are named as such."""
    plt = _pyplot()
    # matplotlib only when drawing
    from matplotlib.patches import Patch

    panels = sorted({(r.height, r.width, r.batch) for r in rows}) or [(0, 0, 0)]
    heights = []
    for h, w, b in panels:
        sub = [r for r in rows if (r.height, r.width, r.batch) == (h, w, b)]
        heights.append(0.6 + 0.26 * max(1, len(sub)) + 0.12 * len({r.model for r in sub}))
    width_in = 10.0
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(width_in, sum(heights) + 1.3),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, (h, w, b) in zip(axes[:, 0], panels, strict=True):
        sub = [r for r in rows if (r.height, r.width, r.batch) == (h, w, b)]
        models = list(dict.fromkeys(r.model for r in sub))
        backends = list(dict.fromkeys(r.backend for r in sub))
        step = len(backends) + 0.6
        timed = [r.median_ms for r in sub if r.ok]
        log = _value_axis(ax, timed, "x", "median latency per call (ms); lower is better")
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, backend in enumerate(backends):
            for j, model in enumerate(models):
                match = [r for r in sub if r.model == model and r.backend == backend]
                if not match:
                    continue
                row, y = match[0], j * step + i
                if not row.ok:
                    ax.text(
                        ax.get_xlim()[0], y, "  not timed (see the table)", va="center",
                        fontsize=7, color="0.4",
                    )  # fmt: skip
                    continue
                ax.barh(y, row.median_ms, 0.8, color=colours[i % len(colours)])
                x = row.median_ms * (1.08 if log else 1.0) + (0 if log else 0.01 * max(timed))
                value = f"{row.median_ms:,.0f}" if row.median_ms >= 100 else f"{row.median_ms:.1f}"
                ax.text(x, y, value, va="center", fontsize=7)
        handles = [
            Patch(color=colours[i % len(colours)], label=runtime_title(backend))
            for i, backend in enumerate(backends)
        ]
        ax.set_ylim(len(models) * step - 1.0, -0.8)  # every slot, a missing bar's too; top down
        ax.set_yticks([j * step + (len(backends) - 1) / 2 for j in range(len(models))])
        ax.set_yticklabels(models, fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(f"{h}x{w}, batch {b}, {precision}", fontsize=9)
        if handles:
            ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    title = "Inference latency, median of the timed calls"
    fig.suptitle(title + "\n" + _wrap(machine_text, width_in - 0.6, 8.5), fontsize=9)
    fig.tight_layout()
    _save(fig, path)


#: Offsets (points) tried in turn for a dot's label, until one overlaps no label placed before.
_LABEL_OFFSETS = ((6, 6), (6, -12), (-6, 6), (-6, -12), (6, 16), (6, -22), (-6, 16), (-6, -22))


def _place_labels(fig: Any, ax: Any, labels: list[tuple[str, tuple[float, float], bool]]) -> None:
    """Label each dot (text, (x, y), bold) at the first offset whose text overlaps no label
    placed before it and stays inside the axes (the last offset tried when none does)."""
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    placed: list[Any] = []
    for text, xy, bold in labels:
        for k, (dx, dy) in enumerate(_LABEL_OFFSETS):
            note = ax.annotate(
                text, xy, xytext=(dx, dy), textcoords="offset points", fontsize=7.5,
                ha="left" if dx > 0 else "right", fontweight="bold" if bold else "normal",
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75},
            )  # fmt: skip
            box = note.get_window_extent(renderer)
            fits = inside.x0 <= box.x0 and box.x1 <= inside.x1 and box.y1 <= inside.y1
            if (fits and not any(box.overlaps(b) for b in placed)) or k == len(_LABEL_OFFSETS) - 1:
                placed.append(box)
                break
            note.remove()


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both latency (lower) and mIoU (higher), by latency."""
    front: list[Point] = []
    for point in sorted(points, key=lambda p: (p[1], -p[2])):
        if not front or point[2] > front[-1][2]:
            front.append(point)
    return front


def plot_pareto(points: Sequence[Point], path: Path, title: str, machine_text: str) -> Path:
    """mIoU against latency, one labelled dot per point, the Pareto front (lower latency,
    higher mIoU) marked and joined by a step line: the best mIoU reachable within a latency.

    Args:
        points: (label, latency in ms, mIoU as a 0..1 fraction) per model.
        path: the PNG to write (atomically).
        title: the plot's title (wrapped to fit).
        machine_text: which machine measured the latencies (e.g. utils.machine.measured_on).

    Returns:
        `path`. ValueError for no points, a latency <= 0 or an mIoU outside 0..1.
    """
    if not points:
        raise ValueError("plot_pareto needs at least one (label, latency_ms, miou) point")
    for label, latency, miou in points:
        if not latency > 0 or not 0.0 <= miou <= 1.0:
            raise ValueError(
                f"a point is (label, latency ms > 0, mIoU fraction 0..1); got "
                f"{(label, latency, miou)!r}"
            )
    plt = _pyplot()
    width_in = 8.0
    fig, ax = plt.subplots(figsize=(width_in, 5.6))
    front = pareto_front(points)
    on_front = {id(p) for p in front}
    latencies = [p[1] for p in points]
    log = _value_axis(
        ax, latencies, "x", "median latency per call (ms); lower is better", DOT_LOG_SPREAD
    )
    top = max(100 * p[2] for p in points)
    ax.set_ylim(0, min(100.0, top * 1.2 + 1))
    ax.set_ylabel("mIoU (%); higher is better")
    others = [p for p in points if id(p) not in on_front]
    if others:
        ax.scatter([p[1] for p in others], [100 * p[2] for p in others], color="0.55", s=28,
                   label="dominated", zorder=3)  # fmt: skip
    xs, ys = [p[1] for p in front], [100 * p[2] for p in front]
    right = ax.get_xlim()[1]
    ax.step([*xs, right], [*ys, ys[-1]], where="post", color="tab:red", lw=1.4, zorder=2)
    ax.scatter(xs, ys, color="tab:red", s=44, label="Pareto front", zorder=4)
    labels = [
        (f"{label} ({100 * miou:.1f}%, {latency:,.0f} ms)" if id(p) in on_front else label,
         (latency, 100 * miou), id(p) in on_front)
        for p in sorted(points, key=lambda p: p[1])
        for label, latency, miou in [p]
    ]  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower right")
    ax.tick_params(labelsize=8)
    if log:
        ax.set_xlim(right=right)
    ax.set_title(
        _wrap(title, width_in - 0.8, 10) + "\n" + _wrap(machine_text, width_in - 0.8, 8),
        fontsize=9,
    )
    fig.tight_layout()  # the axes' final place first: the labels are placed in display space
    _place_labels(fig, ax, labels)
    _save(fig, path)
    return path
