"""Nearest-neighbour resizes give the same pixels in Keras and onnxruntime.

TensorRT is not installed on this machine (no `tensorrt` module, no GPU), so the comparison
here is Keras against onnxruntime on the exported file (after deploy.rewrites' TensorRT-friendly
rewrite of the resize modes) plus the TensorRT-construct scan; TensorRT itself is compared on a
GPU machine by the engine checks, not here.

Which nearest resizes the models hold, found by reading models/: the only one inside a graph
is the image-pooling branch of ASPP (`models.layers.aspp`, DeepLabV3+): UpSampling2D from the
1x1 pooled features to the feature map's size. Labels are resized outside the graphs, with
OpenCV's INTER_NEAREST_EXACT (utils/resize.py, datasets/augment.py), never by a model.
"""

from __future__ import annotations

import keras
import numpy as np
import onnxruntime as ort
import pytest
from keras import layers

from deploy import checks, export


def _onnx_run(model: keras.Model, x: np.ndarray, tmp_path, name: str) -> np.ndarray:
    """Export `model` as convert_to_onnx.py does, scan it, run it in onnxruntime (CPU)."""
    result = export.export_onnx(model, tmp_path / f"{name}.onnx")
    assert checks.find_trt_incompatibilities(result.path) == []
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _image_model(layer: layers.Layer, size: tuple[int, int]) -> keras.Model:
    inputs = keras.Input((*size, 3))
    return keras.Model(inputs, layer(inputs), name="resize")


def _values(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Distinct values per pixel, so a pixel taken from the wrong source shows."""
    rng = np.random.default_rng(seed)
    return rng.permutation(size[0] * size[1] * 3).reshape(1, *size, 3).astype(np.float32)


@pytest.mark.parametrize(
    "layer",
    [
        layers.Resizing(8, 8, interpolation="nearest", name="resizing_nearest"),
        layers.UpSampling2D(2, name="upsampling_nearest"),  # Keras' default: nearest
    ],
    ids=["Resizing", "UpSampling2D"],
)
def test_nearest_4x4_to_8x8_is_identical_in_keras_and_onnxruntime(layer, tmp_path):
    x = _values((4, 4))
    model = _image_model(layer, (4, 4))
    expected = x.repeat(2, axis=1).repeat(2, axis=2)  # pixel (i, j) comes from (i // 2, j // 2)
    keras_out = model.predict(x, verbose=0)
    np.testing.assert_array_equal(keras_out, expected)
    np.testing.assert_array_equal(_onnx_run(model, x, tmp_path, "up2"), keras_out)


def test_nearest_non_integer_factor_is_identical_in_keras_and_onnxruntime(tmp_path):
    """4x4 to 6x6 (1.5x): the half-pixel rule picks floor((i + 0.5) / 1.5) in both."""
    x = _values((4, 4), seed=1)
    model = _image_model(layers.Resizing(6, 6, interpolation="nearest", name="nn_1p5"), (4, 4))
    rows = np.floor((np.arange(6) + 0.5) / 1.5).astype(int)
    keras_out = model.predict(x, verbose=0)
    np.testing.assert_array_equal(keras_out, x[:, rows][:, :, rows])
    np.testing.assert_array_equal(_onnx_run(model, x, tmp_path, "up1p5"), keras_out)


def test_aspp_pool_upsample_of_deeplab_is_identical_in_keras_and_onnxruntime(tmp_path):
    """The one nearest resize inside a model: DeepLabV3+'s ASPP image-pooling branch."""
    from models import build_model

    deeplab = build_model("deeplabv3+", (64, 128, 3), backbone="mobilenetv2")
    upsample = deeplab.get_layer("aspp_pool_upsample")
    assert isinstance(upsample, layers.UpSampling2D) and upsample.interpolation == "nearest"
    pooled_shape = tuple(upsample.input.shape[1:])
    size = tuple(upsample.output.shape[1:3])
    assert pooled_shape[:2] == (1, 1) and size != (1, 1)
    # The same layer (its config) on a 1x1 map alone, so that the comparison is exact (the
    # exporter takes 3-channel images: 3 channels instead of the branch's 256).
    model = _image_model(layers.UpSampling2D.from_config(upsample.get_config()), (1, 1))
    x = np.random.default_rng(2).standard_normal((1, 1, 1, 3)).astype(np.float32)
    keras_out = model.predict(x, verbose=0)
    np.testing.assert_array_equal(keras_out, np.broadcast_to(x, (1, *size, 3)))
    np.testing.assert_array_equal(_onnx_run(model, x, tmp_path, "aspp_pool"), keras_out)
