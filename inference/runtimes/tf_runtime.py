"""TensorFlow: the Keras model itself as a TF graph (tf.function), with XLA for `xla`.

Its precision is the model's dtype policy (float32, mixed_float16, mixed_bfloat16): a model is
built under the policy it runs in (`models.trained.build_inference_model` builds float32).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from inference.runtimes.base import Runtime
from utils.errors import BadInput

#: Keras' dtype policy of each precision.
POLICIES = {"fp32": "float32", "fp16": "mixed_float16", "bf16": "mixed_bfloat16"}


def available(name: str = "tf") -> str | None:
    """Why TensorFlow cannot run here, or None."""
    if importlib.util.find_spec("tensorflow") is None:
        return "TensorFlow is not installed; pip install -r requirements.txt"
    return None


class TFRuntime(Runtime):
    """A keras.Model called in inference mode inside a tf.function (XLA-compiled for xla)."""

    def __init__(self, name: str, model: Any, precision: str | None = None) -> None:
        import tensorflow as tf

        policies = {v: k for k, v in POLICIES.items()}
        own = policies.get(model.dtype_policy.name)
        if own is None or (precision is not None and precision != own):
            raise BadInput(
                f"the {name} runtime computes in the model's dtype policy "
                f"({model.dtype_policy.name}); build the model under "
                f"{POLICIES.get(precision or 'fp32', precision)!r} for {precision}"
            )
        self.name = name
        self.model = model
        self.precision = own
        self.metadata = {}
        self.nchw = False
        self.input_shape = [d if isinstance(d, int) else None for d in model.inputs[0].shape]
        out = model.outputs[0].shape
        self.output_channels = out[-1] if len(out) == 4 and isinstance(out[-1], int) else None
        self.version = tf.__version__
        self._gpu = bool(tf.config.list_physical_devices("GPU"))
        self._sync = tf.test.experimental.sync_devices if self._gpu else None
        self._forward = tf.function(
            lambda x: _first(model(x, training=False)), jit_compile=name == "xla"
        )
        self._tf = tf

    def ran_on(self) -> list[str]:
        return ["GPU" if self._gpu else "CPU"]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "device": self.ran_on()[0],
            "policy": self.model.dtype_policy.name,
        }

    def _bind(self, feed: np.ndarray) -> Callable[[], Any]:
        x, forward, sync = self._tf.constant(feed), self._forward, self._sync

        def call() -> Any:
            out = forward(x)
            if sync is not None:
                sync()
            return out

        return call

    def _output(self, feed: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(self._tf.constant(feed)), dtype=np.float32)


def _first(outputs: Any) -> Any:
    """The logits of a model that returns several outputs (aux heads: the first)."""
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def open(
    name: str, source: Any, threads: int | None = None, precision: str | None = None
) -> TFRuntime:
    """Run a built keras.Model (see `TFRuntime`); TensorFlow keeps its own thread pools."""
    return TFRuntime(name, source, precision)
