"""Procedurally drawn street scenes written as a Cityscapes tree, so nothing has to be downloaded.

The tree has the official layout and formats: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png``
(RGB), ``gtFine/{split}/{city}/*_gtFine_labelIds.png`` (8-bit label ids),
``*_gtFine_instanceIds.png`` (16-bit, ``id * 1000 + k`` for instance classes, the label id
elsewhere) and ``*_gtFine_color.png`` (RGBA in the official palette). Optional coarse
annotations go to ``gtCoarse/train_extra`` with images in ``leftImg8bit/train_extra``.

Every class is drawn with its own colour family and texture in its usual place (sky on top,
road at the bottom, cars on the road, people on the sidewalk), so a model can learn it. With
``rail=True`` (``--rail``) every scene also has a tram track (rail track, label id 10: scored by
``--classes rail20`` only) along the road, drawn from a random stream of its own, so the rest of
each scene is laid out as without it (the track covers some road, and the cars are drawn over
it); without it the files are those of earlier versions, byte for byte.

Usage: ``python -m datasets.synthetic OUT [--num N] [--size H,W] [--seed S] [--rail]``
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import name2label

from utils.cli import fail, make_parser, parse_target_size
from utils.errors import BadInput
from utils.labels import LABEL_ID_PALETTE, VALID_LABEL_IDS

CITIES = {"train": "synthtown", "val": "synthville", "train_extra": "synthburg"}

#: Base RGB colour of each drawn class (distinct from its palette colour on purpose, so a
#: model has to learn appearance rather than read off the colour map).
_APPEARANCE = {
    "sky": (140, 180, 230),
    "building": (120, 110, 100),
    "vegetation": (60, 120, 40),
    "road": (90, 90, 95),
    "sidewalk": (170, 160, 150),
    "pole": (60, 60, 60),
    "traffic sign": (230, 200, 30),
    "car": (30, 60, 150),
    "person": (200, 120, 90),
    "bicycle": (150, 20, 20),
    "ego vehicle": (20, 20, 20),
}
_TEXTURE = {
    "sky": 4,
    "building": 14,
    "vegetation": 28,
    "road": 10,
    "sidewalk": 12,
    "pole": 6,
    "traffic sign": 8,
    "car": 10,
    "person": 12,
    "bicycle": 8,
    "ego vehicle": 3,
}
INSTANCE_CLASSES = ("car", "person", "bicycle")
#: The class railway users need, which the 19-class benchmark does not score (label id 10).
RAIL_TRACK = "rail track"
_RAIL_APPEARANCE = (115, 95, 75)  # ballast and sleepers: brown-grey


def _id(name: str) -> int:
    return name2label[name].id


def _jitter_color(rng: np.random.Generator, name: str) -> tuple[int, int, int]:
    base = np.array(_APPEARANCE[name], dtype=np.int32)
    return tuple(int(v) for v in np.clip(base + rng.integers(-15, 16, size=3), 0, 255))


class _Canvas:
    """Label ids, instance ids and a per-class mask painted together, shape by shape."""

    def __init__(self, height: int, width: int) -> None:
        self.labels = np.full((height, width), _id("sky"), dtype=np.uint8)
        self.instances = np.full((height, width), _id("sky"), dtype=np.uint16)
        self.counts: dict[int, int] = {}

    def instance_value(self, name: str) -> int:
        label = _id(name)
        if name not in INSTANCE_CLASSES:
            return label
        k = self.counts.get(label, 0)
        self.counts[label] = k + 1
        return label * 1000 + k

    def poly(self, points: np.ndarray, name: str, instance: int | None = None) -> None:
        pts = [np.round(points).astype(np.int32)]
        cv2.fillPoly(self.labels, pts, _id(name))
        cv2.fillPoly(self.instances, pts, instance if instance is not None else _id(name))

    def rect(
        self, x0: float, y0: float, x1: float, y1: float, name: str, instance: int | None = None
    ) -> None:
        self.poly(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), name, instance)

    def circle(
        self,
        cx: float,
        cy: float,
        r: float,
        name: str,
        instance: int | None = None,
        thickness: int = -1,
    ) -> None:
        center, radius = (round(cx), round(cy)), max(1, round(r))
        cv2.circle(self.labels, center, radius, _id(name), thickness)
        value = instance if instance is not None else _id(name)
        cv2.circle(self.instances, center, radius, int(value), thickness)

    def line(
        self, p0: tuple[float, float], p1: tuple[float, float], width: int, name: str, instance: int
    ) -> None:
        a, b = (round(p0[0]), round(p0[1])), (round(p1[0]), round(p1[1]))
        cv2.line(self.labels, a, b, _id(name), max(1, width))
        cv2.line(self.instances, a, b, int(instance), max(1, width))


def _draw_scene(
    rng: np.random.Generator, height: int, width: int, rail_rng: np.random.Generator | None = None
) -> _Canvas:
    """Lay out one street scene in label space (with a rail track drawn from `rail_rng`)."""
    h, w = height, width
    c = _Canvas(h, w)
    horizon = h * rng.uniform(0.42, 0.52)
    vanish_x = w * rng.uniform(0.4, 0.6)
    # Buildings along the horizon, with a varying skyline.
    x = -rng.uniform(0, 0.05) * w
    while x < w:
        bw = w * rng.uniform(0.06, 0.18)
        top = horizon - h * rng.uniform(0.12, 0.4)
        c.rect(x, top, x + bw, horizon + 2, "building")
        x += bw + w * rng.uniform(0.0, 0.03)
    # Trees: trunks are hidden, crowns are vegetation blobs that overlap the buildings.
    for _ in range(rng.integers(2, 6)):
        cx, cy = w * rng.uniform(0, 1), horizon - h * rng.uniform(0.0, 0.12)
        for _ in range(4):
            c.circle(
                cx + w * rng.uniform(-0.02, 0.02),
                cy + h * rng.uniform(-0.03, 0.03),
                h * rng.uniform(0.03, 0.07),
                "vegetation",
            )
    # Ground: sidewalks on both sides of a road that narrows towards the vanishing point.
    c.rect(0, horizon, w, h, "sidewalk")
    road_half_bottom = w * rng.uniform(0.3, 0.45)
    c.poly(
        np.array(
            [
                [vanish_x - 0.01 * w, horizon],
                [vanish_x + 0.01 * w, horizon],
                [vanish_x + road_half_bottom * 1.3, h],
                [vanish_x - road_half_bottom * 1.3, h],
            ]
        ),
        "road",
    )
    if rail_rng is not None:  # a tram track in the road, narrowing to the vanishing point
        centre = vanish_x + road_half_bottom * rail_rng.uniform(-0.6, 0.6)
        half = w * rail_rng.uniform(0.06, 0.1)
        c.poly(
            np.array(
                [
                    [vanish_x - 0.002 * w, horizon],
                    [vanish_x + 0.002 * w, horizon],
                    [centre + half, h],
                    [centre - half, h],
                ]
            ),
            RAIL_TRACK,
        )

    def depth(y: float) -> float:
        """Scale of an object whose base stands at image row y (1 at the bottom)."""
        return max(0.05, (y - horizon) / (h - horizon))

    def road_edges(y: float) -> tuple[float, float]:
        half = 0.01 * w + (road_half_bottom * 1.3 - 0.01 * w) * depth(y)
        return vanish_x - half, vanish_x + half

    # Poles with traffic signs on the sidewalks, far to near.
    for _ in range(rng.integers(2, 5)):
        y = horizon + (h - horizon) * rng.uniform(0.1, 0.7)
        s = depth(y)
        left, right = road_edges(y)
        px = (
            left - w * rng.uniform(0.02, 0.1) * s
            if rng.random() < 0.5
            else right + w * rng.uniform(0.02, 0.1) * s
        )
        pole_h, pole_w = h * 0.5 * s, max(2.0, w * 0.006 * s)
        c.rect(px - pole_w / 2, y - pole_h, px + pole_w / 2, y, "pole")
        size = max(3.0, w * 0.025 * s)
        if rng.random() < 0.5:
            c.circle(px, y - pole_h, size, "traffic sign")
        else:
            c.rect(px - size, y - pole_h - size, px + size, y - pole_h + size, "traffic sign")
    # Cars on the road, drawn far to near so near ones occlude.
    for y in np.sort(horizon + (h - horizon) * rng.uniform(0.1, 0.75, size=rng.integers(2, 6))):
        s = depth(y)
        left, right = road_edges(y)
        cw, ch = w * 0.16 * s, h * 0.18 * s
        cx = rng.uniform(left + cw / 2, max(left + cw / 2 + 1, right - cw / 2))
        inst = c.instance_value("car")
        c.rect(cx - cw / 2, y - ch * 0.65, cx + cw / 2, y - ch * 0.1, "car", inst)
        c.rect(cx - cw * 0.32, y - ch, cx + cw * 0.3, y - ch * 0.6, "car", inst)
        for wx in (cx - cw * 0.3, cx + cw * 0.3):
            c.circle(wx, y - ch * 0.12, ch * 0.14, "car", inst)
    # People and bicycles on the sidewalks.
    for y in np.sort(horizon + (h - horizon) * rng.uniform(0.15, 0.8, size=rng.integers(2, 7))):
        s = depth(y)
        left, right = road_edges(y)
        ph, pw = h * 0.35 * s, w * 0.025 * s
        left_room, right_room = left - 2 * pw, w - right - 2 * pw
        if max(left_room, right_room) <= 0:
            continue
        if left_room > 0 and (right_room <= 0 or rng.random() < 0.5):
            px = rng.uniform(pw, left - pw)
        else:
            px = rng.uniform(right + pw, w - pw)
        if rng.random() < 0.7:
            inst = c.instance_value("person")
            c.rect(px - pw / 2, y - ph * 0.8, px + pw / 2, y, "person", inst)
            c.circle(px, y - ph * 0.88, pw * 0.55, "person", inst)
        else:
            inst = c.instance_value("bicycle")
            r = ph * 0.2
            t = max(1, round(r * 0.25))
            c.circle(px - r * 1.3, y - r, r, "bicycle", inst, thickness=t)
            c.circle(px + r * 1.3, y - r, r, "bicycle", inst, thickness=t)
            c.line((px - r * 1.3, y - r), (px, y - r * 2.2), t, "bicycle", inst)
            c.line((px, y - r * 2.2), (px + r * 1.3, y - r), t, "bicycle", inst)
            c.line((px - r * 1.3, y - r), (px + r * 1.3, y - r), t, "bicycle", inst)
    # The ego vehicle's bonnet at the bottom: void in training, as in the real data.
    bonnet = h * rng.uniform(0.04, 0.08)
    c.poly(np.array([[0, h], [0.1 * w, h - bonnet], [0.9 * w, h - bonnet], [w, h]]), "ego vehicle")
    return c


def _render(
    rng: np.random.Generator, labels: np.ndarray, rail_rng: np.random.Generator | None = None
) -> np.ndarray:
    """Paint an RGB photo for a label map: class colour + class texture + lighting + noise
    (the rail track's colour from `rail_rng`, so `rng` draws what it draws without one)."""
    h, w = labels.shape
    lut = np.zeros((256, 3), dtype=np.float32)
    texture_lut = np.zeros(256, dtype=np.float32)
    for name in _APPEARANCE:
        lut[_id(name)] = _jitter_color(rng, name)
        texture_lut[_id(name)] = _TEXTURE[name]
    if rail_rng is not None:
        base = np.array(_RAIL_APPEARANCE, dtype=np.int32) + rail_rng.integers(-15, 16, size=3)
        lut[_id(RAIL_TRACK)] = np.clip(base, 0, 255)
        texture_lut[_id(RAIL_TRACK)] = 10
    image = lut[labels]
    # Class-specific texture from a coarse noise field upsampled (cheap at full resolution).
    noise = rng.standard_normal((max(2, h // 8), max(2, w // 8), 1)).astype(np.float32)
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    image += noise * texture_lut[labels][..., None]
    # Building windows and road markings give those classes a structure of their own.
    rows = (np.arange(h) // max(2, h // 48)) % 2 == 0
    cols = (np.arange(w) // max(2, w // 96)) % 2 == 0
    windows = (labels == _id("building")) & rows[:, None] & cols[None, :]
    image[windows] *= 0.6
    if rail_rng is not None:  # dark sleepers across the track
        sleepers = (np.arange(h) // max(1, h // 64)) % 3 == 0
        image[(labels == _id(RAIL_TRACK)) & sleepers[:, None]] *= 0.55
    # A vertical light gradient over the whole scene.
    image *= np.linspace(1.1, 0.85, h, dtype=np.float32)[:, None, None]
    return np.clip(image, 0, 255).astype(np.uint8)


#: uint8[256, 4] RGBA: label id -> official colour, opaque (unused ids transparent black).
_COLOR_PALETTE = np.concatenate(
    [LABEL_ID_PALETTE, np.where(VALID_LABEL_IDS, 255, 0).astype(np.uint8)[:, None]], axis=1
)


def _color_png(labels: np.ndarray) -> np.ndarray:
    """The official colour annotation: RGBA palette colour of each label id."""
    return _COLOR_PALETTE[labels]


def _write_png(path: Path, array: np.ndarray, rgb: bool = False) -> None:
    if rgb:
        array = cv2.cvtColor(
            array, cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
        )
    if not cv2.imwrite(str(path), array, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise BadInput(f"could not write {str(path)!r}")


def write_sample(
    root: Path,
    split: str,
    index: int,
    rng: np.random.Generator,
    size: tuple[int, int],
    coarse: bool = False,
    rail_rng: np.random.Generator | None = None,
) -> str:
    """Draw one scene and write its image and annotations; return its CITY_SEQ_FRAME name.
    With `rail_rng` the scene has a rail track drawn from it."""
    city = CITIES.get(split, f"synth{split}")
    name = f"{city}_{index:06d}_000019"
    canvas = _draw_scene(rng, *size, rail_rng=rail_rng)
    image = _render(rng, canvas.labels, rail_rng=rail_rng)
    image_dir = root / "leftImg8bit" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    _write_png(image_dir / f"{name}_leftImg8bit.png", image, rgb=True)
    kind = "gtCoarse" if coarse else "gtFine"
    gt_dir = root / kind / split / city
    gt_dir.mkdir(parents=True, exist_ok=True)
    labels = canvas.labels
    if coarse:
        # Coarse polygons leave the boundaries between objects unlabeled.
        edges = cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((9, 9), np.uint8)) > 0
        labels = np.where(edges, np.uint8(_id("unlabeled")), labels)
    _write_png(gt_dir / f"{name}_{kind}_labelIds.png", labels)
    _write_png(gt_dir / f"{name}_{kind}_instanceIds.png", canvas.instances)
    _write_png(gt_dir / f"{name}_{kind}_color.png", _color_png(labels), rgb=True)
    return name


def generate(
    out_dir: str | os.PathLike,
    num: int = 20,
    size: Sequence[int] = (1024, 2048),
    seed: int = 0,
    splits: Sequence[str] = ("train", "val"),
    num_coarse: int = 0,
    rail: bool = False,
) -> Path:
    """Write `num` scenes per split (and `num_coarse` coarse train_extra scenes) under `out_dir`.

    Args:
        out_dir: root of the new tree (created; existing files of the same names are replaced).
        num: images per split.
        size: (height, width) of every image; Cityscapes is (1024, 2048).
        seed: the same seed writes the same files.
        splits: which fine splits to write.
        num_coarse: images in leftImg8bit/train_extra with gtCoarse annotations.
        rail: draw a rail track (label id 10) in every scene, from a random stream of its own.
    """
    height, width = int(size[0]), int(size[1])
    if num < 1 or height < 16 or width < 16:
        raise BadInput(f"need num >= 1 and a size of at least 16x16; got num={num}, size={size!r}")
    root = Path(out_dir)
    for split_index, split in enumerate(splits):
        for i in range(num):
            rng = np.random.default_rng([seed, split_index, i])
            rail_rng = np.random.default_rng([seed, split_index, i, 10]) if rail else None
            write_sample(root, split, i, rng, (height, width), rail_rng=rail_rng)
    for i in range(num_coarse):
        rng = np.random.default_rng([seed, 99, i])
        rail_rng = np.random.default_rng([seed, 99, i, 10]) if rail else None
        write_sample(root, "train_extra", i, rng, (height, width), coarse=True, rail_rng=rail_rng)
    return root


def cache_dir() -> Path:
    """Folder for generated trees: $CITYSCAPES_BENCH_CACHE, else ~/.cache/cityscapes-bench."""
    base = os.environ.get("CITYSCAPES_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cityscapes-bench"
    )
    return Path(base)


def ensure_synthetic_tree(num: int = 20, size: Sequence[int] = (1024, 2048), seed: int = 0) -> Path:
    """Return a cached synthetic tree, generating it (atomically, by folder rename) if missing."""
    height, width = int(size[0]), int(size[1])
    root = cache_dir() / f"synthetic-{height}x{width}-n{num}-s{seed}"
    if (root / "gtFine").is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        generate(tmp, num=num, size=(height, width), seed=seed, num_coarse=max(1, num // 4))
        try:
            os.replace(tmp, root)
        except OSError:
            if not (root / "gtFine").is_dir():  # another process may have won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: write a synthetic Cityscapes tree."""
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output folder (the new Cityscapes root)")
    parser.add_argument("--num", type=int, default=20, help="images per split (train, val)")
    parser.add_argument(
        "--size", type=parse_target_size, default=(1024, 2048), help="image size H,W"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--coarse", type=int, default=0, help="number of coarse train_extra images to add"
    )
    parser.add_argument(
        "--rail",
        action="store_true",
        help="draw a rail track (label id 10, scored by --classes rail20) in every scene",
    )
    args = parser.parse_args(argv)
    if args.num < 1 or args.coarse < 0:
        fail(f"--num must be >= 1 and --coarse >= 0; got --num {args.num} --coarse {args.coarse}")
    start = time.perf_counter()
    try:
        root = generate(
            args.out,
            num=args.num,
            size=args.size,
            seed=args.seed,
            num_coarse=args.coarse,
            rail=args.rail,
        )
    except (OSError, BadInput) as exc:  # OSError: the OS refused to write the folder named
        fail(str(exc))
    total = args.num * 2 + args.coarse
    print(
        f"wrote {total} scenes of {args.size[0]}x{args.size[1]} to {root} "
        f"in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
