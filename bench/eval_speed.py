"""The evaluation speed benchmark: evaluate.py against cityscapesscripts and the decode ceiling.

One of the suite's two deliberate subprocess boundaries: `benchmark_evaluation` times
``python evaluate.py`` as a whole process (interpreter start, imports, scoring, writing), so it
runs the script by its path and never imports it. benchmark.py's ``eval`` subcommand calls
`benchmark_evaluation` and writes `speed_markdown`'s page.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.timing import dense_peak
from evaluation.cityscapes_eval import (
    chunk_size,
    frame_key,
    ground_truth_files,
    image_path,
    instance_path,
    label_tables,
    match_predictions,
    read_id_map,
    run_official,
    worker_pool,
)
from evaluation.report import RESULT_JSON
from utils.errors import BadInput
from utils.io import read_png
from utils.machine import available_cores, machine_info

#: The repository root: evaluate.py is run from here, by its path.
REPO = Path(__file__).resolve().parents[1]


def benchmark_evaluation(
    root: str | os.PathLike,
    num_files: int = 300,
    split: str = "val",
    predictions: str | os.PathLike | None = None,
    workers: int | None = None,
    official: bool = True,
    work_dir: str | os.PathLike | None = None,
    repeats: int = 1,
) -> dict[str, Any]:
    """Time evaluate.py (whole process) against the official script and the PNG-decode ceiling.

    The same `num_files` ground-truth files (the first of the split, sorted) are evaluated three
    ways: ``python evaluate.py`` as a subprocess (interpreter start, imports, scoring and writing
    its outputs all timed); cityscapesscripts' ``evaluateImgLists`` in this process (``np.in1d``
    given back for it; its interpreter start is not counted, which favours it); and only decoding
    the three PNGs of each pair with the same number of worker processes (the ceiling).

    Args:
        root: Cityscapes root with gtFine/{split} (full-size files for a meaningful figure).
        num_files: how many ground-truth files to use.
        split: split to use.
        predictions: folder of label-id PNG predictions; default: noisy ground truth written by
            `make_noisy_predictions` into the work folder.
        workers: worker processes for ours and the ceiling (default: the available CPUs).
        official: also time the official script (slow: about 0.3 s per full-size image).
        work_dir: folder for the links, predictions and outputs (default: a temporary one).
        repeats: time ours and the ceiling this many times, alternating, and keep the fastest
            of each (the machine may be shared; the official script runs once).

    Returns:
        dict with seconds (`ours_s`, `official_s`, `ceiling_s`), `speedup` (official / ours),
        `ceiling_share` (ceiling / ours), `max_abs_difference` between the two results,
        `images_per_s`, the machine and library versions and the command that was timed.
    """
    workers = available_cores() if workers is None else int(workers)
    repeats = max(1, int(repeats))
    if num_files < 1:
        raise BadInput(f"num_files must be at least 1, got {num_files!r}")
    gts = ground_truth_files(root, split)
    if len(gts) < num_files:
        raise BadInput(
            f"{str(root)!r} has {len(gts)} ground-truth files in split {split!r}, "
            f"fewer than the {num_files} asked for"
        )
    # How fast the (shared) machine is at the time: speed-ups between a compute-bound and a
    # decode-bound program move with it.
    machine_speed = dense_peak(seconds=1.0, backends=("numpy",))["numpy"]["best_gflops"]
    with tempfile.TemporaryDirectory(prefix="eval-bench-", dir=work_dir) as tmp:
        folder = Path(tmp)
        if predictions is None:
            pairs = make_noisy_predictions(root, folder / "noisy", split=split, num_files=num_files)
        else:
            pairs = _match_subset(predictions, gts[:num_files])
        sub_root, sub_preds = _subset_tree(pairs, folder / "subset", split)
        sub_pairs = match_predictions(sub_preds, ground_truth_files(sub_root, split))
        command = _evaluate_command(sub_preds, sub_root, split, folder / "ours", workers)
        runs, theirs = _time_runs(command, sub_pairs, workers, official, repeats, folder)
        ours = json.loads((folder / "ours" / RESULT_JSON).read_text())
        result = _summary(runs, num_files, workers, repeats, sub_pairs)
        result["command"] = (
            " ".join(command[1:]).replace(str(folder), "<tmp>").replace(f"{REPO}{os.sep}", "")
        )
        if theirs is not None:
            _add_official(result, runs, ours, theirs, workers)
    info = machine_info()
    result.update(cpu=info["cpu"], cores=info["cores"], versions=info["versions"])
    result["numpy_matmul_gflops"] = machine_speed
    return result


def _evaluate_command(
    predictions: Path, root: Path, split: str, out: Path, workers: int
) -> list[str]:
    """The ``python evaluate.py ...`` command line that is timed."""
    return [
        sys.executable,
        str(REPO / "evaluate.py"),
        "--predictions",
        str(predictions),
        "-p",
        str(root),
        "--split",
        split,
        "-r",
        str(out),
        "--workers",
        str(workers),
        "--no-progress",
    ]


def _time_runs(
    command: list[str],
    pairs: Sequence[tuple[str, str]],
    workers: int,
    official: bool,
    repeats: int,
    folder: Path,
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, Any] | None]:
    """(wall, CPU) seconds of each run of the ceiling, evaluate.py and the official script.

    Returns the runs by name and the official script's last result (None if not run).
    """
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "ceiling": [], "official": []}
    theirs: dict[str, Any] | None = None
    for _ in range(repeats):
        with _timer(runs["ceiling"]):
            decode_ceiling(pairs, workers=workers)
        with _timer(runs["ours"]):
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"evaluate.py failed ({done.returncode}): {done.stderr.strip()}")
        if official:
            with _timer(runs["official"]):
                theirs = run_official(pairs, folder / "official.json")
    return runs, theirs


def _summary(
    runs: dict[str, list[tuple[float, float]]],
    num_files: int,
    workers: int,
    repeats: int,
    pairs: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """The figures of evaluate.py and the ceiling: fastest wall time of each, with its CPU time."""
    best = {k: min(v) for k, v in runs.items() if v}
    return {
        "num_files": num_files,
        "size": "x".join(str(s) for s in read_png(pairs[0][1], "ground truth").shape),
        "workers": workers,
        "repeats": repeats,
        "ours_s": best["ours"][0],
        "ceiling_s": best["ceiling"][0],
        "ours_cpu_s": best["ours"][1],
        "ceiling_cpu_s": best["ceiling"][1],
        "ours_runs_s": [w for w, _ in runs["ours"]],
        "ceiling_runs_s": [w for w, _ in runs["ceiling"]],
        "ceiling_share": best["ceiling"][0] / best["ours"][0],
        "images_per_s": num_files / best["ours"][0],
    }


def _add_official(
    result: dict[str, Any],
    runs: dict[str, list[tuple[float, float]]],
    ours: dict[str, Any],
    theirs: dict[str, Any],
    workers: int,
) -> None:
    """Add the official script's times, the speed-ups and the difference between the results."""
    result["official_s"], result["official_cpu_s"] = min(runs["official"])
    result["official_runs_s"] = [w for w, _ in runs["official"]]
    result["speedup"] = result["official_s"] / result["ours_s"]
    # What the machine allows: the official's CPU time over the ceiling's wall time if
    # the decoding workers had the cores to themselves (CPU time / workers).
    result["speedup_bound"] = result["official_cpu_s"] / (result["ceiling_cpu_s"] / workers)
    result["max_abs_difference"] = _max_abs_difference(ours, theirs)
    result["averageScoreClasses"] = theirs["averageScoreClasses"]


class _timer:
    """Context manager appending (wall seconds, CPU seconds of this process and its waited-for
    children) to a list."""

    def __init__(self, into: list[tuple[float, float]]) -> None:
        self.into = into

    @staticmethod
    def _cpu() -> float:
        """CPU seconds (user + system) of this process and its waited-for children.

        CPU time, not memory: `utils.machine` reads the peak resident set.
        """

        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def __enter__(self) -> _timer:
        self.wall, self.cpu = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *_: object) -> None:
        self.into.append((time.perf_counter() - self.wall, self._cpu() - self.cpu))


def _max_abs_difference(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    """Largest difference between the score entries of two result dictionaries (NaN = NaN)."""
    worst = 0.0
    for key in ("classScores", "classInstScores", "categoryScores", "categoryInstScores"):
        for name, value in theirs[key].items():
            mine = ours[key][name]
            if math.isnan(value) != math.isnan(mine):
                return math.inf
            if not math.isnan(value):
                worst = max(worst, abs(mine - value))
    for key in (
        "averageScoreClasses",
        "averageScoreInstClasses",
        "averageScoreCategories",
        "averageScoreInstCategories",
    ):
        if not (math.isnan(ours[key]) and math.isnan(theirs[key])):
            worst = max(worst, abs(ours[key] - theirs[key]))
    if np.asarray(ours["confMatrix"]).tolist() != np.asarray(theirs["confMatrix"]).tolist():
        return math.inf
    return worst


# --------------------------------------------------------------------------- inputs


def decode_ceiling(pairs: Sequence[tuple[str, str]], workers: int | None = None) -> float:
    """Seconds to only decode the three PNGs of every pair with `workers` processes."""
    workers = available_cores() if workers is None else int(workers)
    tasks = [(p, g, instance_path(g)) for p, g in pairs]
    start = time.perf_counter()
    chunk = chunk_size(len(tasks), workers)
    with worker_pool(workers) as pool:
        list(pool.map(_decode_only, tasks, chunksize=chunk))
    return time.perf_counter() - start


def _decode_only(task: tuple[str, str, str]) -> int:
    """Decode three PNGs and return their pixel count (worker entry point)."""
    return sum(int(read_png(path, "file").size) for path in task)


def make_noisy_predictions(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str = "val",
    noise: float = 0.15,
    seed: int = 0,
    num_files: int | None = None,
) -> list[tuple[str, str]]:
    """Write label-id PNG predictions that are the ground truth with blocks of wrong classes.

    Each prediction copies the ground truth, maps void ids to a valid class (as a model would),
    and replaces a `noise` share of 16x16 blocks with random evaluated label ids.

    Args:
        root: Cityscapes root with gtFine/{split}.
        out_dir: folder for ``CITY_SEQ_FRAME_pred.png`` files (created).
        split: split to use.
        noise: share of blocks replaced.
        seed: random seed.
        num_files: use the first `num_files` ground-truth files (default: all).

    Returns:
        The (prediction, ground truth) pairs written.
    """
    # image libraries only when images are read
    import cv2

    t = label_tables()
    valid_ids = np.array([i for i in t.eval_ids if not t.ignored[i]], dtype=np.uint8)
    gts = ground_truth_files(root, split)[:num_files]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs = []
    for gt_path in gts:
        gt = read_id_map(gt_path, "ground truth")
        pred = gt.copy()
        void = t.ignored[pred]
        pred[void] = rng.choice(valid_ids)
        h, w = pred.shape
        blocks = rng.random(((h + 15) // 16, (w + 15) // 16)) < noise
        values = rng.choice(valid_ids, size=blocks.shape).astype(np.uint8)
        block_mask = np.kron(blocks, np.ones((16, 16), bool))[:h, :w]
        block_values = np.kron(values, np.ones((16, 16), np.uint8))[:h, :w]
        pred[block_mask] = block_values[block_mask]
        path = out / f"{frame_key(gt_path)}_pred.png"
        if not cv2.imwrite(str(path), pred):
            raise OSError(f"could not write {str(path)!r}")
        pairs.append((str(path), gt_path))
    return pairs


def _subset_tree(pairs: Sequence[tuple[str, str]], folder: Path, split: str) -> tuple[Path, Path]:
    """A root and prediction folder of symbolic links holding exactly `pairs`."""
    root, preds = folder / "root", folder / "predictions"
    for pred, gt in pairs:
        gt_path = Path(gt)
        city_dir = root / "gtFine" / split / gt_path.parent.name
        city_dir.mkdir(parents=True, exist_ok=True)
        for source in (gt_path, Path(instance_path(gt))):
            (city_dir / source.name).symlink_to(source.resolve())
        image = image_path(gt_path)
        image_dir = root / "leftImg8bit" / split / gt_path.parent.name
        image_dir.mkdir(parents=True, exist_ok=True)
        if image.exists():
            (image_dir / image.name).symlink_to(image.resolve())
        preds.mkdir(parents=True, exist_ok=True)
        (preds / Path(pred).name).symlink_to(Path(pred).resolve())
    return root, preds


def _match_subset(predictions: str | os.PathLike, gts: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs for `gts` only, from a folder that may hold predictions of further files."""
    folder = Path(predictions)
    by_key: dict[str, str] = {}
    for pred in sorted(folder.rglob("*.png")):
        by_key.setdefault(frame_key(pred), str(pred))
    missing = [g for g in gts if frame_key(g) not in by_key]
    if missing:
        raise BadInput(f"no prediction for ground truth {missing[0]!r} under {str(folder)!r}")
    return [(by_key[frame_key(g)], g) for g in gts]


# --------------------------------------------------------------------------- the page


def _runs(values: Sequence[float] | None) -> str:
    """'1.23 / 1.30' for a list of run times ('-' when absent)."""
    return " / ".join(f"{v:.2f}" for v in values) if values else "-"


def speed_markdown(result: dict[str, Any], command: str = "") -> str:
    """A results/ page for a `benchmark_evaluation` result (machine, versions, figures)."""
    lines = [
        "# Evaluation speed: evaluate.py against cityscapesscripts",
        "",
        f"{result['num_files']} prediction / ground-truth pairs of {result['size']} pixels "
        f"(label-id PNGs; the three PNGs of each pair are decoded), "
        f"{result['workers']} worker processes.",
        "",
        "| what | wall seconds | CPU seconds | images/s (wall) |",
        "|---|---:|---:|---:|",
    ]
    lines += _speed_rows(result)
    lines.append("")
    lines += _speed_notes(result)
    lines += [
        "",
        f"Machine: {result['cpu']}, {result['cores']} cores, no GPU; NumPy matmul "
        f"{result.get('numpy_matmul_gflops', math.nan):.0f} GFLOP/s just before the runs. "
        "cityscapesscripts' Cython extension is not built, so it takes its NumPy path, as a pip "
        "install does.",
        "",
        f"evaluate.py command timed: `python {result['command']}`",
    ]
    if command:
        lines += ["", f"Reproduce: `{command}`"]
    return "\n".join(lines) + "\n"


def _speed_rows(result: dict[str, Any]) -> list[str]:
    """The table rows: the official script (if run), evaluate.py, the decode ceiling."""
    n = result["num_files"]
    rows = []
    if "official_s" in result:
        rows.append(
            (
                f"cityscapesscripts {result['versions'].get('cityscapesscripts', '')} "
                "evaluateImgLists "
                "(in-process, np.in1d given back; 1 process)",
                "official",
            )
        )
    rows.append(
        ("evaluate.py, whole process (start, imports, scoring, JSON, markdown, plot)", "ours")
    )
    rows.append(
        (
            f"decode ceiling: only decoding the 3 PNGs of each pair "
            f"({result['workers']} processes)",
            "ceiling",
        )
    )
    return [
        f"| {label} | {result[key + '_s']:.2f} | {result[key + '_cpu_s']:.2f} | "
        f"{n / result[key + '_s']:.1f} |"
        for label, key in rows
    ]


def _speed_notes(result: dict[str, Any]) -> list[str]:
    """The bullet points under the table: speed-ups, differences, share of the ceiling."""
    lines = []
    if "speedup" in result:
        lines.append(f"- speed-up over the official script (wall): **{result['speedup']:.2f}x**")
        lines.append(
            f"- the most this machine allows while decoding every PNG: "
            f"{result['speedup_bound']:.2f}x (official CPU time / ceiling CPU time "
            f"spread over {result['workers']} cores)"
        )
        same = " (confusion matrices identical)" if result["max_abs_difference"] == 0 else ""
        lines.append(
            f"- largest difference between the two results' scores: "
            f"{result['max_abs_difference']:.3g}{same}"
        )
    lines.append(
        f"- share of the decode ceiling reached (wall): "
        f"**{result['ceiling_share']:.2f}**; in CPU time: "
        f"{result['ceiling_cpu_s'] / result['ours_cpu_s']:.2f}"
    )
    if result.get("repeats", 1) > 1:
        lines.append(
            f"- fastest of {result['repeats']} alternating runs of each; all runs (s): "
            f"ours {_runs(result.get('ours_runs_s'))}, ceiling "
            f"{_runs(result.get('ceiling_runs_s'))}, official "
            f"{_runs(result.get('official_runs_s'))}"
        )
    return lines
