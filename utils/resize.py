"""The resizing every scored prediction goes through: photos in, class scores out.

One implementation for predict.py, evaluate.py (inference.segmenter) and the validation of
train.py (training.validation), so a checkpoint scores the same everywhere: a photo is resized
to the model's input size (area filter when shrinking, bilinear otherwise) and the class scores
are resized back to the ground truth's size (bilinear) before the argmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["resize_image", "resize_map", "scores_to_train_ids"]


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize an RGB uint8 image to (H, W): area filter when shrinking, bilinear otherwise."""
    height, width = int(size[0]), int(size[1])
    if image.shape[:2] == (height, width):
        return image
    shrink = height < image.shape[0] and width < image.shape[1]
    return cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )


def scores_to_train_ids(scores: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear-resize (h, w, C) class scores to (H, W) and take the argmax: (H, W) uint8."""
    height, width = int(size[0]), int(size[1])
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape[:2] != (height, width):
        # OpenCV resizes at most 512 channels at once; Cityscapes has 19.
        scores = cv2.resize(scores, (width, height), interpolation=cv2.INTER_LINEAR)
        if scores.ndim == 2:  # a single class comes back without its channel axis
            scores = scores[..., None]
    return scores.argmax(axis=-1).astype(np.uint8)


def resize_map(values: np.ndarray, size: Sequence[int], nearest: bool = False) -> np.ndarray:
    """Resize a (h, w) map to (H, W): nearest for ids, bilinear for real values."""
    height, width = int(size[0]), int(size[1])
    if values.shape[:2] == (height, width):
        return values
    return cv2.resize(
        values,
        (width, height),
        interpolation=cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_LINEAR,
    )
