"""Training augmentation on uint8 arrays with OpenCV: random scale and crop, flip, colour jitter.

The crop is taken before resizing (only the source window that lands in the crop is resized),
and flip, the colour matrix and the label-id lookup run on the smaller of the source window and
the crop. Results are resized straight into 64-byte aligned arrays, which TensorFlow takes from a
``tf.numpy_function`` without copying them. OpenCV releases the GIL, so tf.data's parallel calls
use every core.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from utils.labels import IGNORE

_TENSOR_ALIGN = 64  #: bytes; TensorFlow's tensor alignment (EIGEN_MAX_ALIGN_BYTES)

cv2.setNumThreads(
    1
)  # tf.data parallelises across files; one thread per call avoids oversubscription


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training augmentation settings."""

    min_scale: float = 0.5
    max_scale: float = 2.0
    flip: bool = True
    photometric: bool = True
    brightness: float = 0.2  #: +- fraction of 255 added
    contrast: float = 0.2  #: +- fraction of the contrast scale
    saturation: float = 0.2  #: +- fraction of the saturation (mixing towards grey)


def _empty_aligned(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised C-contiguous uint8 array whose data starts on a 64-byte boundary.

    TensorFlow wraps a numpy_function's result without copying it only when the data is
    aligned to its 64-byte tensor alignment; numpy's buffers are 16-byte aligned, so an
    ordinary array of a full frame is copied once more under the GIL.
    """
    size = int(np.prod(shape))
    buf = np.empty(size + _TENSOR_ALIGN, np.uint8)
    start = -buf.ctypes.data % _TENSOR_ALIGN
    return buf[start : start + size].reshape(shape)


def _fill_border(array: np.ndarray, y: int, x: int, h: int, w: int, value: int) -> None:
    """Set everything of `array` outside the window (y, x, h, w) to `value`."""
    array[:y] = value
    array[y + h :] = value
    array[y : y + h, :x] = value
    array[y : y + h, x + w :] = value


def scale_crop(
    image: np.ndarray,
    label: np.ndarray,
    crop: tuple[int, int],
    scale: float,
    rng: np.random.Generator,
    flip: bool = False,
    colour: np.ndarray | None = None,
    label_lut: np.ndarray | None = None,
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale by `scale` and take a random `crop`, cropping BEFORE resizing: only the source
    window that lands in the crop is resized (bilinear for the image, nearest for the label).
    Where the scaled image is smaller than the crop, the rest is padded: 0 for the image, 255
    (ignore) for the label.

    `flip` mirrors the content horizontally, `colour` (a (3, 4) matrix, see `jitter_matrix`)
    maps the image's colours and `label_lut` (uint8[256]) maps label ids to train ids; each is
    applied to whichever of the source window and the resized crop has fewer pixels (they
    commute with cropping and resizing, up to rounding and clipping for the colours).

    The result is resized straight into its final (64-byte aligned) arrays and the per-pixel
    steps then work in place, so a full frame is written once. With `overwrite` the caller
    gives up `image` and `label`: the per-pixel steps may also work in place on their source
    window (never pass arrays that something else still reads, such as cached tensors).
    """
    h, w = label.shape
    ch, cw = crop

    def window(size: int, out: int) -> tuple[int, int, int]:
        """(source start, source length, output length) along one axis."""
        length = round(out / scale)
        if length <= size:
            return int(rng.integers(0, size - length + 1)), max(1, length), out
        return 0, size, max(1, min(out, round(size * scale)))

    def pixelwise(img: np.ndarray, lab: np.ndarray, in_place: bool) -> tuple[np.ndarray, ...]:
        if flip:
            img = cv2.flip(img, 1, dst=img if in_place else None)
            lab = cv2.flip(lab, 1, dst=lab if in_place else None)
            in_place = True  # the flipped copies are ours
        if colour is not None:
            img = cv2.transform(img, colour, dst=img if in_place else None)
        if label_lut is not None:
            lab = cv2.LUT(lab, label_lut, dst=lab if in_place else None)
        return img, lab

    y0, src_h, out_h = window(h, ch)
    x0, src_w, out_w = window(w, cw)
    img_win = image[y0 : y0 + src_h, x0 : x0 + src_w]
    lab_win = label[y0 : y0 + src_h, x0 : x0 + src_w]
    img_out, lab_out = _empty_aligned((ch, cw, 3)), _empty_aligned((ch, cw))
    py = px = 0
    if (out_h, out_w) != (ch, cw):
        py = int(rng.integers(0, ch - out_h + 1))
        px = int(rng.integers(0, cw - out_w + 1))
        _fill_border(img_out, py, px, out_h, out_w, 0)
        _fill_border(lab_out, py, px, out_h, out_w, IGNORE)
    img_dst = img_out[py : py + out_h, px : px + out_w]
    lab_dst = lab_out[py : py + out_h, px : px + out_w]
    resize = (src_h, src_w) != (out_h, out_w)
    before = resize and src_h * src_w <= out_h * out_w  # zooming in: per-pixel work first
    if before:
        img_win, lab_win = pixelwise(img_win, lab_win, overwrite)
    if resize:
        cv2.resize(img_win, (out_w, out_h), dst=img_dst, interpolation=cv2.INTER_LINEAR)
        cv2.resize(lab_win, (out_w, out_h), dst=lab_dst, interpolation=cv2.INTER_NEAREST_EXACT)
    else:
        img_dst[...] = img_win
        lab_dst[...] = lab_win
    if not before:
        pixelwise(img_dst, lab_dst, True)
    return img_out, lab_out


def jitter_matrix(rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """A (3, 4) float32 colour matrix for `cv2.transform`: saturation, contrast and brightness.

    Saturation mixes each channel towards the grey level (ITU-R BT.601 luma weights), contrast
    scales about mid-grey 128 and brightness adds a constant; together they are one affine map,
    which OpenCV applies to uint8 with saturation about 5x faster than a lookup table here.
    """
    brightness = rng.uniform(-aug.brightness, aug.brightness) * 255
    contrast = 1 + rng.uniform(-aug.contrast, aug.contrast)
    saturation = 1 + rng.uniform(-aug.saturation, aug.saturation)
    luma = np.array([0.299, 0.587, 0.114])
    mix = saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), luma)
    offset = 128 * (1 - contrast) + brightness
    return np.hstack([contrast * mix, np.full((3, 1), offset)]).astype(np.float32)


def augment_pair(
    image: np.ndarray,
    label: np.ndarray,
    crop: tuple[int, int],
    seed: int,
    aug: Augment = Augment(),
    label_lut: np.ndarray | None = None,
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Random scale + crop, horizontal flip and colour jitter, repeatable for a given seed.

    `label_lut`: map the label through this table too (label ids -> train ids), on whichever
    of the source window and the crop is smaller. `overwrite`: see `scale_crop`.
    """
    rng = np.random.default_rng(seed)
    scale = float(np.exp(rng.uniform(np.log(aug.min_scale), np.log(aug.max_scale))))
    flip = aug.flip and rng.random() < 0.5
    colour = jitter_matrix(rng, aug) if aug.photometric else None
    return scale_crop(
        image,
        label,
        crop,
        scale,
        rng,
        flip=flip,
        colour=colour,
        label_lut=label_lut,
        overwrite=overwrite,
    )


def resize_pair(
    image: np.ndarray, label: np.ndarray, size: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Resize for evaluation: bilinear for the image, nearest for the label."""
    if size is None or image.shape[:2] == tuple(size):
        return image, label
    h, w = size
    return (
        cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR),
        cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST_EXACT),
    )
