"""Bayesian SegNet: exact index pooling/unpooling, ONNX export of it, Monte Carlo dropout."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from models.bayes_segnet import mc_predict
from models.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D

MC_SIZE = (32, 64)


def reference_unpool(pooled: np.ndarray, indices: np.ndarray, shape: tuple) -> np.ndarray:
    """Numpy scatter: every pooled value written at its flat per-image index, zeros elsewhere."""
    out = np.zeros(shape, dtype=pooled.dtype)
    for n in range(shape[0]):
        out[n].reshape(-1)[indices[n].reshape(-1)] = pooled[n].reshape(-1)
    return out


@pytest.mark.slow
def test_pool_unpool_exact_on_a_full_resolution_tensor() -> None:
    """1x1024x2048x64: where the seed's float32 indices misplaced 37M of 134M values."""
    shape = (1, 1024, 2048, 64)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    pooled, indices = MaxPoolingWithArgmax2D()(x)
    pooled, indices = pooled.numpy(), indices.numpy()
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(pooled, x.reshape(1, 512, 2, 1024, 2, 64).max(axis=(2, 4)))
    np.testing.assert_array_equal(x.reshape(-1)[indices.reshape(-1)], pooled.reshape(-1))
    # float32 would round these indices: the case the int64 indices exist for.
    assert indices.max() > 2**24
    assert np.any(indices.astype(np.float32).astype(np.int64) != indices)
    expected = reference_unpool(pooled, indices, shape)
    del x
    unpooled = MaxUnpooling2D()([pooled, indices]).numpy()
    assert unpooled.dtype == np.float32
    np.testing.assert_array_equal(unpooled, expected)


def test_pool_unpool_per_image_indices_in_a_batch() -> None:
    shape = (3, 8, 12, 5)
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    pooled, indices = (t.numpy() for t in MaxPoolingWithArgmax2D()(x))
    assert indices.dtype == np.int64 and indices.shape == (3, 4, 6, 5)
    assert indices.max() < 8 * 12 * 5, "indices are per image (batch not included)"
    unpooled = MaxUnpooling2D()([pooled, indices]).numpy()
    np.testing.assert_array_equal(unpooled, reference_unpool(pooled, indices, shape))
    np.testing.assert_array_equal(unpooled.max(axis=(1, 2)), x.max(axis=(1, 2)))


def test_pooling_rejects_odd_sizes() -> None:
    with pytest.raises(ValueError, match="even"):
        MaxPoolingWithArgmax2D()(keras.Input((7, 8, 3)))


def test_pool_unpool_export_to_onnx_exactly() -> None:
    tf2onnx = pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    inputs = keras.Input((16, 24, 3))
    features = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    pooled, indices = MaxPoolingWithArgmax2D(name="pool")(features)
    unpooled = MaxUnpooling2D(name="unpool")([pooled * 2.0, indices])
    model = keras.Model(inputs, [unpooled, indices])
    spec = (tf.TensorSpec((None, 16, 24, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_function(
        tf.function(lambda x: model(x, training=False)), input_signature=spec, opset=17
    )
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).uniform(0, 255, (2, 16, 24, 3)).astype("float32")
    onnx_unpooled, onnx_indices = session.run(None, {session.get_inputs()[0].name: x})
    keras_unpooled, keras_indices = (t.numpy() for t in model(x, training=False))
    np.testing.assert_array_equal(onnx_indices, keras_indices)
    np.testing.assert_allclose(onnx_unpooled, keras_unpooled, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(onnx_unpooled != 0, keras_unpooled != 0)


@pytest.fixture(scope="module")
def segnet() -> keras.Model:
    keras.utils.set_random_seed(0)
    return models.build_model("bayes_segnet", (*MC_SIZE, 3))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 255, (2, *MC_SIZE, 3)).astype("float32")


def test_structure_central_dropout_and_int64_indices(segnet: keras.Model) -> None:
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
        assert segnet.get_layer(f"enc{stage}_pool").output[1].dtype == "int64"
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
