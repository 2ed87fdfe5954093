"""Bayesian SegNet: window-position pooling/unpooling (TensorRT-safe), its ONNX export, MC dropout.

The independent reference for the pooling and unpooling is tf.nn.max_pool_with_argmax's int64
flat indices with every value scattered back to its index (numpy, or tf.scatter_nd inside a
reference model with the same layer names).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from models.bayes_segnet import mc_predict
from models.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D

MC_SIZE = (32, 64)


def argmax_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pooled, int64 flat per-image indices) from tf.nn.max_pool_with_argmax, 2x2 stride 2."""
    pooled, indices = tf.nn.max_pool_with_argmax(
        x, 2, 2, "VALID", output_dtype=tf.int64, include_batch_in_index=False
    )
    return pooled.numpy(), indices.numpy()


def reference_unpool(values: np.ndarray, indices: np.ndarray, shape: tuple) -> np.ndarray:
    """Numpy scatter: every value written at its flat per-image index, zeros elsewhere."""
    out = np.zeros(shape, dtype=values.dtype)
    for n in range(shape[0]):
        out[n].reshape(-1)[indices[n].reshape(-1)] = values[n].reshape(-1)
    return out


def _check_against_argmax_reference(x: np.ndarray, values: np.ndarray) -> None:
    """Pooling equals max_pool_with_argmax; unpooling `values` equals the index scatter."""
    pooled, position = MaxPoolingWithArgmax2D()(x)
    ref_pooled, indices = argmax_reference(x)
    np.testing.assert_array_equal(pooled.numpy(), ref_pooled)
    assert position.dtype == tf.int32
    expected = reference_unpool(values, indices, x.shape)
    del indices, ref_pooled
    unpooled = MaxUnpooling2D()([values, position]).numpy()
    assert unpooled.dtype == np.float32
    np.testing.assert_array_equal(unpooled, expected)


@pytest.mark.slow
def test_pool_unpool_equal_the_int64_index_reference_at_full_resolution() -> None:
    """1x1024x2048x64 (134M values, indices past 2**24): continuous values, then integer values
    in 0..2 where most windows hold tied maxima (first in row-major order must win)."""
    shape = (1, 1024, 2048, 64)
    rng = np.random.default_rng(0)
    values = rng.standard_normal((1, 512, 1024, 64), dtype=np.float32)
    x = rng.standard_normal(shape, dtype=np.float32)
    _check_against_argmax_reference(x, values)
    x = rng.integers(0, 3, shape).astype(np.float32)
    assert np.mean(np.sum(x.reshape(1, 512, 2, 1024, 2, 64) == 2, axis=(2, 4)) > 1) > 0.2
    _check_against_argmax_reference(x, values)


def test_ties_send_the_value_to_the_first_maximum_only() -> None:
    # One 2x2 window per channel: all tied, top-right and bottom-left tied, bottom pair tied.
    x = np.array([[1, 1, 1, 1], [0, 5, 5, 0], [0, 0, 3, 3]], np.float32).T.reshape(1, 2, 2, 3)
    pooled, position = MaxPoolingWithArgmax2D()(x)
    np.testing.assert_array_equal(position.numpy().ravel(), [0, 1, 2])
    # the same rule in tf.nn.max_pool_with_argmax: flat index (y * 2 + x) * 3 + c
    assert argmax_reference(x)[1].ravel().tolist() == [0, (0 + 1) * 3 + 1, (2 + 0) * 3 + 2]
    unpooled = MaxUnpooling2D()([pooled, position]).numpy()
    np.testing.assert_array_equal(unpooled.sum(axis=(1, 2)), pooled.numpy().reshape(1, 3))
    np.testing.assert_array_equal((unpooled != 0).sum(axis=(1, 2)), [[1, 1, 1]])


def test_pool_unpool_per_image_in_a_batch_with_ties() -> None:
    shape = (3, 8, 12, 5)
    rng = np.random.default_rng(1)
    for x in (rng.standard_normal(shape), rng.integers(0, 2, shape)):
        x = x.astype("float32")
        values = rng.standard_normal((3, 4, 6, 5)).astype("float32")
        _check_against_argmax_reference(x, values)
        pooled, position = MaxPoolingWithArgmax2D()(x)
        assert position.shape == (3, 4, 6, 5)
        unpooled = MaxUnpooling2D()([pooled, position]).numpy()
        np.testing.assert_array_equal(unpooled.max(axis=(1, 2)), x.max(axis=(1, 2)))


def test_pooling_rejects_odd_sizes() -> None:
    with pytest.raises(ValueError, match="even"):
        MaxPoolingWithArgmax2D()(keras.Input((7, 8, 3)))


def _to_onnx(model: keras.Model, shape: tuple):
    tf2onnx = pytest.importorskip("tf2onnx")
    spec = (tf.TensorSpec((None, *shape), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_function(
        tf.function(lambda x: model(x, training=False)), input_signature=spec, opset=17
    )
    return proto


def test_pool_unpool_export_to_onnx_exactly_and_for_tensorrt() -> None:
    """onnxruntime gives Keras' unpooling bit for bit, tied maxima included, and the graph
    holds nothing TensorRT's parser rejects (no MaxPool Indices output, no Mod)."""
    ort = pytest.importorskip("onnxruntime")
    from deploy.checks import find_trt_incompatibilities

    inputs = keras.Input((16, 24, 3))
    pooled, position = MaxPoolingWithArgmax2D(name="pool")(inputs)
    unpooled = MaxUnpooling2D(name="unpool")([pooled * 2.0 + 1.0, position])
    model = keras.Model(inputs, [unpooled, position])
    proto = _to_onnx(model, (16, 24, 3))
    ops = {node.op_type for node in proto.graph.node}
    assert "Mod" not in ops and "MaxPool" not in ops and "ScatterND" not in ops
    assert find_trt_incompatibilities(proto) == []
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    for x in (rng.uniform(0, 255, (2, 16, 24, 3)), rng.integers(0, 3, (2, 16, 24, 3))):
        x = x.astype("float32")
        onnx_unpooled, onnx_position = session.run(None, {session.get_inputs()[0].name: x})
        keras_unpooled, keras_position = (t.numpy() for t in model(x, training=False))
        np.testing.assert_array_equal(onnx_position, keras_position)
        np.testing.assert_array_equal(onnx_unpooled, keras_unpooled)
        _, indices = argmax_reference(x)
        values = (x.reshape(2, 8, 2, 12, 2, 3).max(axis=(2, 4)) * 2.0 + 1.0).astype("float32")
        np.testing.assert_array_equal(onnx_unpooled, reference_unpool(values, indices, x.shape))


class _ArgmaxPool(keras.layers.Layer):
    """Reference: tf.nn.max_pool_with_argmax, int64 indices over the whole batch."""

    def call(self, inputs):
        return tf.nn.max_pool_with_argmax(
            inputs, 2, 2, "VALID", output_dtype=tf.int64, include_batch_in_index=True
        )

    def compute_output_spec(self, inputs):
        n, h, w, c = inputs.shape
        shape = (n, h // 2, w // 2, c)
        return keras.KerasTensor(shape, inputs.dtype), keras.KerasTensor(shape, "int64")


class _IndexUnpool(keras.layers.Layer):
    """Reference: scatter every value to its int64 index (tf.scatter_nd)."""

    def call(self, inputs):
        values, indices = inputs
        n, h, w, c = (tf.shape(values)[i] for i in range(4))
        flat = tf.scatter_nd(
            tf.reshape(indices, (-1, 1)),
            tf.reshape(values, (-1,)),
            tf.cast(tf.reshape(n * 4 * h * w * c, (1,)), tf.int64),
        )
        return tf.reshape(flat, (n, 2 * h, 2 * w, c))

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape[0]
        return (n, 2 * h, 2 * w, c)


def _index_reference_model(model: keras.Model) -> keras.Model:
    """`model` with its pooling and unpooling replaced by the int64 index reference layers
    (same names); every other layer, and so every weight, is shared."""

    def clone(layer):
        if isinstance(layer, MaxPoolingWithArgmax2D):
            return _ArgmaxPool(name=layer.name)
        if isinstance(layer, MaxUnpooling2D):
            return _IndexUnpool(name=layer.name)
        return layer

    return keras.models.clone_model(model, clone_function=clone)


def test_segnet_equals_the_int64_index_segnet_and_takes_its_weights(tmp_path) -> None:
    """The same weights file loads into the reference (int64 index unpooling, same layer names)
    and into the model, and both give the same logits (Keras on both sides: same kernels)."""
    from models.loading import load_weights_strict

    keras.utils.set_random_seed(4)
    size = (64, 128)
    reference = _index_reference_model(models.build_model("bayes_segnet", (*size, 3)))
    assert any(isinstance(layer, _IndexUnpool) for layer in reference.layers)
    weights = tmp_path / "index_segnet.weights.h5"
    reference.save_weights(str(weights))
    keras.utils.set_random_seed(5)
    model = models.build_model("bayes_segnet", (*size, 3))
    load_weights_strict(model, weights, "bayes_segnet")
    for layer in model.layers:
        for a, b in zip(
            layer.get_weights(), reference.get_layer(layer.name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(a, b)
    images = np.random.default_rng(6).uniform(0, 255, (2, *size, 3)).astype("float32")
    got = model(images, training=False).numpy()
    expected = reference(images, training=False).numpy()
    np.testing.assert_array_equal(got.argmax(-1), expected.argmax(-1))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.fixture(scope="module")
def segnet() -> keras.Model:
    keras.utils.set_random_seed(0)
    return models.build_model("bayes_segnet", (*MC_SIZE, 3))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 255, (2, *MC_SIZE, 3)).astype("float32")


def test_structure_central_dropout_and_window_positions(segnet: keras.Model) -> None:
    dropouts = [layer for layer in segnet.layers if isinstance(layer, keras.layers.Dropout)]
    assert sorted(layer.name for layer in dropouts) == sorted(
        [f"enc{s}_dropout" for s in (3, 4, 5)] + [f"dec{s}_dropout" for s in (3, 4, 5)]
    )
    assert all(layer.rate == 0.5 for layer in dropouts)
    convs = [
        layer.name
        for layer in segnet.layers
        if isinstance(layer, keras.layers.Conv2D) and layer.name.startswith("enc")
    ]
    assert len(convs) == 13, "VGG16 encoder"
    for stage in range(1, 6):
        assert segnet.get_layer(f"enc{stage}_pool").output[1].dtype == "int32"  # window position
        assert segnet.get_layer(f"dec{stage}_unpool") is not None


def test_plain_inference_is_deterministic(segnet: keras.Model, images: np.ndarray) -> None:
    first = segnet(images, training=False).numpy()
    np.testing.assert_array_equal(first, segnet(images, training=False).numpy())
    np.testing.assert_array_equal(first, segnet.predict(images, verbose=0))


def test_mc_predict_variance(segnet: keras.Model, images: np.ndarray) -> None:
    mean, spread = mc_predict(segnet, images, samples=4, seed=7)
    assert mean.shape == (2, *MC_SIZE, 19) and mean.dtype == np.float32
    assert spread.shape == (2, *MC_SIZE) and spread.dtype == np.float32
    np.testing.assert_allclose(mean.sum(axis=-1), 1.0, atol=1e-5)
    assert np.all(spread >= 0) and spread.mean() > 0, "dropout samples must differ"
    again_mean, again_spread = mc_predict(segnet, images, samples=4, seed=7)
    np.testing.assert_array_equal(mean, again_mean)
    np.testing.assert_array_equal(spread, again_spread)
    other_mean, _ = mc_predict(segnet, images, samples=4, seed=8)
    assert not np.array_equal(mean, other_mean)
    # The MC mean is not the deterministic (dropout off) softmax.
    plain = tf.nn.softmax(segnet(images, training=False)).numpy()
    assert not np.allclose(mean, plain)


def test_mc_predict_matches_numpy_over_the_samples(segnet: keras.Model, images: np.ndarray):
    """Mean softmax and class-averaged variance equal numpy's over the same T dropout samples."""
    from models.bayes_segnet import _monte_carlo_model

    mc_model = _monte_carlo_model(segnet, seed=11)
    stacked = np.stack([tf.nn.softmax(mc_model(images, training=False)).numpy() for _ in range(3)])
    assert not np.array_equal(stacked[0], stacked[1])
    mean, spread = mc_predict(segnet, images, samples=3, seed=11)
    np.testing.assert_allclose(mean, stacked.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(spread, stacked.var(axis=0).mean(axis=-1), rtol=1e-3, atol=1e-7)
    _, zero_spread = mc_predict(segnet, images, samples=1, seed=11)
    np.testing.assert_array_equal(zero_spread, 0.0)


def test_mc_predict_entropy_and_batching(segnet: keras.Model, images: np.ndarray) -> None:
    mean, entropy = mc_predict(segnet, images, samples=3, seed=5, uncertainty="entropy")
    assert np.all(entropy >= 0) and np.all(entropy <= np.log(19) + 1e-4)
    expected = -np.sum(mean * np.log(np.maximum(mean, 1e-12)), axis=-1)
    np.testing.assert_allclose(entropy, expected, rtol=1e-4, atol=1e-5)
    batched_mean, batched_entropy = mc_predict(
        segnet, images, samples=3, seed=5, uncertainty="entropy", batch_size=1
    )
    assert batched_mean.shape == mean.shape and batched_entropy.shape == entropy.shape


def test_mc_predict_rejects_bad_arguments(segnet: keras.Model, images: np.ndarray) -> None:
    with pytest.raises(ValueError, match="samples"):
        mc_predict(segnet, images, samples=0)
    with pytest.raises(ValueError, match="uncertainty"):
        mc_predict(segnet, images, uncertainty="mutual_information")
    with pytest.raises(ValueError, match="shape"):
        mc_predict(segnet, images[0])
    keras.utils.set_random_seed(0)
    no_dropout = models.build_model("separable_unet", (32, 64, 3))
    with pytest.raises(ValueError, match="no Dropout"):
        mc_predict(no_dropout, images, samples=2)
