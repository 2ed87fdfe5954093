"""A registered model built for inference: float32, inference heads only, trained weights loaded.

What predict, evaluate and export build (``models.loading`` holds the rules it loads by; this
module imports the registry, so no model file may import it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras

from models.layers import MaxUnpooling2D
from models.loading import all_layers, check_weights_file, load_weights_strict
from models.published import recorded_model
from models.registry import build_model, get_info
from utils.errors import BadInput


def build_inference_model(
    name: str,
    input_size: Sequence[int],
    weights: str | os.PathLike | None = None,
    **model_options: Any,
) -> keras.Model:
    """Build registered model `name` in float32 (inference heads only) and load trained weights.

    A weights file saved from the training model with auxiliary heads (``aux=True``) is
    accepted too: it is loaded into the aux model and the shared layers are copied by name.

    Args:
        name: a key of models.MODELS.
        input_size: (H, W) of the built model.
        weights: trained ``.weights.h5``/``.keras`` file, or None for random initialisation.
        **model_options: builder options (backbone, output_stride, ...).
    """
    height, width = int(input_size[0]), int(input_size[1])
    if weights is not None:
        model_options = _with_recorded_options(name, weights, model_options)
    what = f"{name} at {height}x{width}" + "".join(f", {k}={v}" for k, v in model_options.items())
    if weights is not None:
        weights = check_weights_file(weights, what)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = build_model(name, (height, width, 3), **model_options)
        if weights is None:
            return model
        try:
            load_weights_strict(model, weights, what)
        except BadInput:
            if not get_info(name).aux_weights:
                raise
            trained = build_model(name, (height, width, 3), aux=True, **model_options)
            try:
                load_weights_strict(trained, weights, f"{what} with aux heads")
            except BadInput:
                load_weights_strict(model, weights, what)  # re-raise the plain model's message
                raise
            for layer in model.layers:
                layer.set_weights(trained.get_layer(layer.name).get_weights())
        return model
    finally:
        keras.config.set_dtype_policy(previous)


def _with_recorded_options(
    name: str, weights: str | os.PathLike, options: dict[str, Any]
) -> dict[str, Any]:
    """`options` completed by those an imported weights file records (models.published); the
    file's model must be `name`, and an option given must agree with the file's."""
    recorded = recorded_model(weights)
    if recorded is None:
        return options
    file_model, file_options = recorded
    if file_model != name:
        raise BadInput(
            f"weights file {str(weights)!r} holds a {file_model} {file_options}, not a {name}: "
            f"give -m {file_model}"
        )
    for key, value in file_options.items():
        if options.get(key) is not None and options[key] != value:
            raise BadInput(
                f"weights file {str(weights)!r} holds {name} with {key}={value}; got "
                f"{key}={options[key]}: leave the option out"
            )
    return {**options, **file_options}


def jumps_at_pooling_ties(model: keras.Model) -> bool:
    """True when the model's outputs jump at pooling ties (it unpools with argmax positions),
    so that its parity with another runtime is judged on argmax agreement alone
    (inference.parity)."""
    return any(isinstance(layer, MaxUnpooling2D) for layer in all_layers(model))
