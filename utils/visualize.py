"""Pictures of predictions: Cityscapes palette, overlays, side-by-side panels, uncertainty maps.

Colours come from `utils.labels` (built from cityscapesscripts, never a hand-written table). Every function
takes and returns RGB uint8 arrays; OpenCV's BGR order appears only where files are written.
"""

from __future__ import annotations

import math

import numpy as np

from utils.labels import CLASS_NAMES, IGNORE, TRAIN_ID_PALETTE


def colorize(train_ids: np.ndarray, palette: np.ndarray = TRAIN_ID_PALETTE) -> np.ndarray:
    """Colour a train-id map in the Cityscapes palette.

    Args:
        train_ids: (H, W) integer array of train ids 0..18; 255 (ignore) and any other id
            become black.
        palette: uint8[256, 3] of the ids (another class set's: `utils.labels.ClassSet.palette`).

    Returns:
        (H, W, 3) RGB uint8.
    """
    train_ids = np.asarray(train_ids)
    if train_ids.ndim != 2:
        raise ValueError(f"expected a (H, W) train-id map, got shape {train_ids.shape!r}")
    if train_ids.dtype != np.uint8:
        if train_ids.dtype.kind not in "iu":
            raise ValueError(f"train ids must be integers, got dtype {train_ids.dtype}")
        train_ids = np.where((train_ids >= 0) & (train_ids < 256), train_ids, IGNORE).astype(
            np.uint8
        )
    return palette[train_ids]


def overlay(image: np.ndarray, color: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour map onto a photo: `(1 - alpha) * image + alpha * color`.

    Args:
        image: (H, W, 3) RGB uint8 photo.
        color: (H, W, 3) RGB uint8 colour map of the same size (e.g. from `colorize`).
        alpha: weight of the colour map, in [0, 1].

    Returns:
        (H, W, 3) RGB uint8.
    """
    image = np.asarray(image)
    color = np.asarray(color)
    if image.shape != color.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image and colour map must both be (H, W, 3) of one size; got "
            f"{image.shape!r} and {color.shape!r}"
        )
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * color.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def heatmap(values: np.ndarray, vmax: float | None = None, cmap: str = "inferno") -> np.ndarray:
    """Colour a (H, W) float map (e.g. uncertainty) with a matplotlib colour map.

    Args:
        values: (H, W) float array; NaN are drawn black.
        vmax: value mapped to the top of the colour map (default: the map's maximum).
        cmap: matplotlib colour-map name.

    Returns:
        (H, W, 3) RGB uint8.
    """
    # matplotlib only when drawing
    import matplotlib

    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected a (H, W) map, got shape {values.shape!r}")
    finite = np.isfinite(values)
    top = (
        float(vmax) if vmax is not None else (float(values[finite].max()) if finite.any() else 1.0)
    )
    scaled = np.where(finite, values, 0.0) / top if top > 0 else np.zeros_like(values)
    rgba = matplotlib.colormaps[cmap](np.clip(scaled, 0.0, 1.0), bytes=True)
    rgb = rgba[..., :3].copy()
    rgb[~finite] = 0
    return rgb


def legend_entries(
    train_ids_maps: list[np.ndarray],
    names: tuple[str, ...] = CLASS_NAMES,
    palette: np.ndarray = TRAIN_ID_PALETTE,
) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, RGB colour) of each train id 0..18 (class of `names`) present in any of the maps,
    in train-id order."""
    present = np.zeros(256, dtype=bool)
    for ids in train_ids_maps:
        present[np.unique(np.asarray(ids).astype(np.uint8, copy=False))] = True
    return [(name, tuple(int(c) for c in palette[i])) for i, name in enumerate(names) if present[i]]


def panel(
    image: np.ndarray,
    prediction: np.ndarray,
    ground_truth: np.ndarray | None = None,
    title: str | None = None,
    dpi: int = 100,
    names: tuple[str, ...] = CLASS_NAMES,
    palette: np.ndarray = TRAIN_ID_PALETTE,
) -> np.ndarray:
    """Side-by-side figure: photo | ground truth (when given) | prediction, with a class legend.

    Args:
        image: (H, W, 3) RGB uint8 photo.
        prediction: (H, W) train ids.
        ground_truth: (H, W) train ids (255 = ignore), or None.
        title: figure title (e.g. the image name).
        dpi: resolution of the figure; each tile is drawn at most 1024 pixels wide.
        names, palette: the classes of the maps and their colours (another class set's).

    Returns:
        (h, w, 3) RGB uint8 picture of the figure.
    """
    # matplotlib only when drawing
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    tiles = [("photo", np.asarray(image)), ("prediction", colorize(prediction, palette))]
    maps = [prediction]
    if ground_truth is not None:
        tiles.insert(1, ("ground truth", colorize(ground_truth, palette)))
        maps.append(ground_truth)
    height, width = tiles[0][1].shape[:2]
    tile_w = min(10.24, width / dpi)
    tile_h = tile_w * height / width
    fig_w = tile_w * len(tiles)
    entries = legend_entries(maps, names, palette)
    ncol = max(1, min(len(entries), int(fig_w / 1.3)))
    legend_h = 0.22 * math.ceil(len(entries) / ncol) + 0.1 if entries else 0.0
    top_h = 0.6 if title else 0.35  # room for the figure title and the tile titles
    fig_h = tile_h + top_h + legend_h
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    axes = fig.subplots(1, len(tiles))
    for ax, (name, picture) in zip(axes, tiles, strict=True):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if entries:
        handles = [
            Patch(facecolor=np.array(rgb) / 255.0, edgecolor="black", linewidth=0.3, label=name)
            for name, rgb in entries
        ]
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=ncol,
            fontsize=7,
            frameon=False,
            borderaxespad=0.2,
        )
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.05 / fig_h)
    fig.subplots_adjust(
        left=0.005, right=0.995, top=1 - top_h / fig_h, bottom=legend_h / fig_h, wspace=0.02
    )
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
