"""Weights into models: the `weights` option of the builders that have no pretrained weights.

Imports no model file, so every model file may import it.
"""

from __future__ import annotations

import os

import keras


def load_weights_option(
    model: keras.Model, weights: str | os.PathLike | None, name: str
) -> keras.Model:
    """Apply the `weights` option: None keeps random init; a path loads a Keras weights file."""
    if weights is None:
        return model
    if not isinstance(weights, str | os.PathLike) or str(weights) == "imagenet":
        raise ValueError(
            f"{name} has no pretrained weights to download; pass weights=None or "
            f"the path of a .weights.h5 file, got {weights!r}"
        )
    if not os.path.isfile(weights):
        raise ValueError(f"{name} weights file not found: got {str(weights)!r}")
    model.load_weights(weights)
    return model
