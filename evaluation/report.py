"""What evaluate.py writes: the official result JSON's name, the markdown tables, the plot.

Each takes the class set scored (``classSet`` of the result, `evaluation.class_sets`): its
classes are the rows of the class table and of the confusion matrix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from evaluation.cityscapes_eval import label_tables
from evaluation.class_sets import class_confusion
from utils.errors import BadInput
from utils.io import atomic_path
from utils.labels import DEFAULT_CLASS_SET, get_class_set

#: Output names written by evaluate.py under -r (the JSON has the official name and keys).
RESULT_JSON = "resultPixelLevelSemanticLabeling.json"
RESULT_MARKDOWN = "evaluation.md"
RESULT_PLOT = "confusion_matrix.png"


def markdown_report(
    result: dict[str, Any],
    title: str = "Cityscapes pixel-level evaluation",
    notes: Sequence[str] = (),
) -> str:
    """The official printout's class and category tables (IoU, nIoU) as markdown.

    The class table lists the classes of the result's class set (``classSet``); for categories,
    whose classes are the categories, the category table is not repeated."""
    class_set = get_class_set(result.get("classSet", DEFAULT_CLASS_SET))
    t = label_tables(class_set.name)
    lines = [f"# {title}", ""]
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")

    def table(header: str, rows: list[tuple[str, float, float]], avg: tuple[float, float]):
        out = [f"| {header} | IoU | nIoU |", "|---|---:|---:|"]
        out += [f"| {name} | {_fmt(iou)} | {_fmt(niou)} |" for name, iou, niou in rows]
        out.append(f"| **Score Average** | **{_fmt(avg[0])}** | **{_fmt(avg[1])}** |")
        return out

    class_rows = [
        (name, result["classScores"][name], result["classInstScores"][name])
        for name in class_set.names
    ]
    lines += [f"## Classes ({class_set.name}: {class_set.description})", ""]
    lines += table(
        "classes", class_rows, (result["averageScoreClasses"], result["averageScoreInstClasses"])
    )
    if class_set.name == "categories":
        return "\n".join(lines) + "\n"
    # A category of ignored labels only (void) is not listed.
    scored = {t.categories[t.category_of[i]] for i in t.eval_ids if not t.ignored[i]}
    category_rows = [
        (c, result["categoryScores"][c], result["categoryInstScores"][c])
        for c in result["categoryScores"]
        if c in scored
    ]
    lines += ["", "## Categories", ""]
    lines += table(
        "categories",
        category_rows,
        (result["averageScoreCategories"], result["averageScoreInstCategories"]),
    )
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    """Three decimals as the official printout; 'nan' for NaN."""
    return "nan" if math.isnan(value) else f"{value:.3f}"


# --------------------------------------------------------------------------- the plot

#: The "Blues" colour ramp (ColorBrewer): white to dark blue, at 0, 0.5 and 1.
_BLUES = np.array([[247, 251, 255], [107, 174, 214], [8, 48, 107]], dtype=np.float64)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_CELL, _SMALL, _LARGE = 34, 0.36, 0.5  # cell side in pixels, the two font scales


def plot_confusion(result: dict[str, Any], path: str | os.PathLike, title: str = "") -> None:
    """Row-normalised confusion matrix of the class set's classes (19 for the benchmark) plus a
    void column, as a PNG.

    Drawn with OpenCV: importing matplotlib and laying out its text took about 0.9 s of CPU,
    a sixth of a 300-image evaluation here. Cells hold the percentage of the row (shown from
    0.5%); classes absent from the ground truth have a grey row. A title wider than the
    picture is wrapped onto a second line at a space, and what still does not fit is cut
    with "...".
    """
    matrix, names = _row_shares(result)
    columns = names + ["(void ids)"]
    name_width = max(cv2.getTextSize(n, _FONT, _LARGE, 1)[0][0] for n in columns)
    side, bar = 40, 70  # margins: axis name, colour bar
    left = side + name_width + 14
    width = left + _CELL * len(columns) + bar
    heading = _title_lines(title or "Confusion matrix (row-normalised, %)", width - 20)
    top = 24 + 22 * len(heading)  # the title's lines
    bottom = name_width + 50  # the upright column names and the axis name
    height = top + _CELL * len(names) + bottom
    canvas = np.full((height, width, 3), 255, np.uint8)
    _draw_cells(canvas, matrix, names, left, top)
    _draw_axes(canvas, names, columns, name_width, left, top, side)
    for k, line in enumerate(heading):
        _text(canvas, line, width // 2, 20 + 22 * k, _LARGE, align="centre")
    _draw_colour_bar(canvas, left + _CELL * len(columns) + 16, top, top + _CELL * len(names))
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
            raise BadInput(f"cannot write {str(path)!r}; check the folder's free space")


def _title_lines(title: str, width: int, lines: int = 2) -> list[str]:
    """`title` in at most `lines` lines of at most `width` pixels: broken at spaces, the last
    line cut with "..." if the rest still does not fit."""

    def fits(text: str) -> bool:
        return cv2.getTextSize(text, _FONT, _LARGE, 1)[0][0] <= width

    out: list[str] = []
    words = title.split(" ")
    while words and len(out) < lines - 1:
        line = words.pop(0)
        while words and fits(f"{line} {words[0]}"):
            line = f"{line} {words.pop(0)}"
        if not fits(line):  # one word wider than the picture: cut below
            words.insert(0, line)
            break
        out.append(line)
    rest = " ".join(words)
    if rest:
        while not fits(rest) and len(rest) > 4:
            rest = rest[:-4] + "..."
        out.append(rest)
    return out


def _row_shares(result: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """The class set's rows as shares of their sums (NaN rows for absent classes), and their
    names. Columns: the classes, then one summing the label ids the set does not score."""
    class_set = get_class_set(result.get("classSet", DEFAULT_CLASS_SET))
    counts, void = class_confusion(np.asarray(result["confMatrix"]), class_set)
    matrix = np.concatenate([counts, void[:, None]], axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = matrix / matrix.sum(axis=1, keepdims=True)
    return matrix, list(class_set.names)


def _text(
    img: np.ndarray, s: str, x: int, y: int, scale: float, colour=(0, 0, 0), align: str = "left"
) -> None:
    """Write `s` centred vertically on y, its left, right or centre at x."""
    (w, h), _ = cv2.getTextSize(s, _FONT, scale, 1)
    x = {"left": x, "right": x - w, "centre": x - w // 2}[align]
    cv2.putText(img, s, (x, y + h // 2), _FONT, scale, colour, 1, cv2.LINE_AA)


def _colour_of(v: float) -> tuple[int, int, int]:
    """The ramp's RGB colour of a share 0..1."""
    rgb = [np.interp(v, [0, 0.5, 1], _BLUES[:, c]) for c in range(3)]
    return tuple(int(round(c)) for c in rgb)


def _draw_cells(canvas: np.ndarray, matrix: np.ndarray, names: list[str], left: int, top: int):
    """Row names and the coloured cells with their percentages."""
    for r in range(len(names)):
        y0 = top + r * _CELL
        _text(canvas, names[r], left - 8, y0 + _CELL // 2, _LARGE, align="right")
        for c in range(matrix.shape[1]):
            x0 = left + c * _CELL
            v = matrix[r, c]
            fill = (200, 200, 200) if np.isnan(v) else _colour_of(float(v))
            cv2.rectangle(canvas, (x0, y0), (x0 + _CELL - 1, y0 + _CELL - 1), fill, -1)
            if np.isfinite(v) and v >= 0.005:
                ink = (255, 255, 255) if v > 0.5 else (0, 0, 0)
                mid = _CELL // 2
                _text(canvas, f"{100 * v:.0f}", x0 + mid, y0 + mid, _SMALL, ink, "centre")


def _draw_axes(
    canvas: np.ndarray,
    names: list[str],
    columns: list[str],
    name_width: int,
    left: int,
    top: int,
    side: int,
) -> None:
    """Column names and the row axis name: written horizontally, then turned to read upwards."""
    height = canvas.shape[0]
    strip = np.full((_CELL * len(columns), name_width + 16, 3), 255, np.uint8)
    for c, name in enumerate(columns):
        _text(strip, name, strip.shape[1] - 8, c * _CELL + _CELL // 2, _LARGE, align="right")
    strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y0 = top + _CELL * len(names)
    canvas[y0 : y0 + strip.shape[0], left : left + strip.shape[1]] = strip
    centre = left + _CELL * len(columns) // 2
    _text(canvas, "prediction", centre, height - 16, _LARGE, align="centre")
    axis = np.full((side, _CELL * len(names), 3), 255, np.uint8)
    _text(axis, "ground truth", axis.shape[1] // 2, side // 2, _LARGE, align="centre")
    canvas[top : top + axis.shape[1], :side] = cv2.rotate(axis, cv2.ROTATE_90_COUNTERCLOCKWISE)


def _draw_colour_bar(canvas: np.ndarray, x0: int, y0: int, y1: int) -> None:
    """The colour ramp from y1 (0%) up to y0 (100%), with ticks at 0, 50 and 100."""
    for y in range(y0, y1):
        cv2.line(canvas, (x0, y), (x0 + 14, y), _colour_of(1 - (y - y0) / (y1 - y0 - 1)), 1)
    for frac in (0.0, 0.5, 1.0):
        y = int(round(y1 - 1 - frac * (y1 - y0 - 1)))
        cv2.line(canvas, (x0 + 14, y), (x0 + 18, y), (0, 0, 0), 1)
        _text(canvas, f"{100 * frac:.0f}", x0 + 21, y, _SMALL)


def calibration_markdown(summary: dict[str, Any]) -> str:
    """The calibration and safety-class section of evaluation.md (from `calibration_summary`)."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    ece = summary["ece"]
    lines = [
        "## Calibration and safety classes",
        "",
        "- expected calibration error (pixels at ground-truth resolution, top-class softmax "
        f"confidence, {summary['bins']} equal bins; Guo et al., ICML 2017): "
        + ("- (the model gives label ids, no scores)" if ece is None else f"{100 * ece:.2f} %"),
        f"- mean recall of the safety classes: {pct(summary['safety_mean_recall'])} %",
    ]
    mc = summary.get("mc")
    if mc:
        auroc = "-" if mc["auroc"] is None else f"{mc['auroc']:.3f}"
        lines.append(
            f"- Monte Carlo dropout ({mc['samples']} samples): uncertainty against the error "
            f"map AUROC {auroc} (0.5: blind, 1: "
            f"every wrong pixel more uncertain than every right one), area under the "
            f"risk-coverage curve {pct(mc['aurc'])} % (lower is better)"
        )
    lines += ["", "| safety class | recall (%) | precision (%) |", "|---|---:|---:|"]
    for name, scores in summary["safety"].items():
        lines.append(f"| {name} | {pct(scores['recall'])} | {pct(scores['precision'])} |")
    return "\n".join(lines) + "\n"
