"""The model zoo: a registry from CLI name to builder, with per-model metadata.

Every model maps float32 RGB images with values in [0, 255], shape (N, H, W, 3), to float32
logits of shape (N, H, W, num_classes). Input normalisation is the model's first layer, so
the data pipeline keeps images uint8 until they reach the device and exported ONNX files take
raw pixels.

`from models import MODELS, build_model, get_info, count_params` loads the registry
(`models.registry`, which imports Keras and every model file) on first use, so that light
modules of the package (`models.options`, `models.info`) import without Keras.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MODELS", "ModelInfo", "Recipe", "build_model", "count_params", "get_info"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from models import registry  # Keras and every model file, on first use only

        return getattr(registry, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
