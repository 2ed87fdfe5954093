"""One harness over the whole model registry (models.MODELS).

Every registered model is built at a tiny size and checked for: output shape, dtype and finite
values; auxiliary outputs; float32 logits under a mixed-precision policy; one short training
run lowering the loss; `.keras` save/load round trip; the documented size error; and its
trainable parameter count against the published figure.
"""

from __future__ import annotations

import json
import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from models.layers import NORMALIZATIONS

NAMES = sorted(models.MODELS)
NUM_CLASSES = 19
IGNORE = 255
_CACHE: dict[tuple, keras.Model] = {}


def small_size(name: str) -> tuple[int, int]:
    """The smallest multiples of the model's size_multiple at or above 32x64 (keeps CPU runs fast)."""
    multiple = models.get_info(name).size_multiple
    return (math.ceil(32 / multiple) * multiple, math.ceil(64 / multiple) * multiple)


def build(name: str, size: tuple[int, int] | None = None, **options) -> keras.Model:
    """Build `name` at a small size (seeded)."""
    height, width = size or small_size(name)
    keras.utils.set_random_seed(0)
    return models.build_model(name, (height, width, 3), num_classes=NUM_CLASSES, **options)


def cached(name: str) -> keras.Model:
    """The default small float32 build of `name`, shared by the tests that only run it."""
    if name not in _CACHE:
        _CACHE[name] = build(name)
    return _CACHE[name]


def images_for(name: str, batch: int = 2, seed: int = 0) -> np.ndarray:
    """A fixed batch of float32 RGB images in [0, 255] at the model's small size."""
    height, width = small_size(name)
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(batch, height, width, 3)).astype("float32")


def as_list(outputs) -> list:
    """Model outputs as a list (Keras unpacks a one-element output list to its tensor)."""
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def masked_loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Sparse cross-entropy from logits averaged over the pixels whose label is not 255."""
    valid = tf.not_equal(labels, IGNORE)
    safe = tf.where(valid, labels, tf.zeros_like(labels))
    losses = keras.losses.sparse_categorical_crossentropy(safe, logits, from_logits=True)
    weights = tf.cast(valid, losses.dtype)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_info_is_consistent(name: str) -> None:
    info = models.get_info(name)
    assert info.name == name
    assert isinstance(info.size_multiple, int) and info.size_multiple >= 1
    assert info.normalization in NORMALIZATIONS
    assert info.reference_params is None or info.reference_params > 0
    assert info.reference_gmacs is None or info.reference_gmacs > 0
    assert len(info.recipe.crop_size) == 2
    assert all(size % info.size_multiple == 0 for size in info.recipe.crop_size)
    assert info.recipe.learning_rate > 0 and info.recipe.batch_size >= 1


def test_cli_model_names_are_the_registry() -> None:
    from models.options import MODEL_NAMES

    assert sorted(MODEL_NAMES) == NAMES


def test_light_model_modules_import_without_keras() -> None:
    """--help and usage errors of every script stay free of TensorFlow's start-up."""
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, models.options, models.info; print('keras' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("name", NAMES)
def test_published_figures_per_variant(name: str) -> None:
    info = models.get_info(name)
    variants = info.variants()
    assert variants[0] == (
        {info.variant_option: info.default_variant} if info.variant_option else {}
    )
    for options in variants:
        published = info.published_for(options)
        assert published.source
        assert published.params is None or published.params > 0
    assert info.published_for({}) == info.published_for(variants[0])


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_dtype_finite(name: str) -> None:
    model = cached(name)
    images = images_for(name)
    logits = model(images, training=False)
    assert isinstance(logits, tf.Tensor), "without aux=True a model returns one tensor"
    assert tuple(logits.shape) == (*images.shape[:3], NUM_CLASSES)
    assert logits.dtype == tf.float32
    assert np.all(np.isfinite(logits.numpy()))


@pytest.mark.parametrize("name", NAMES)
def test_aux_outputs(name: str) -> None:
    info = models.get_info(name)
    model = build(name, aux=True)
    images = images_for(name)
    outputs = model(images, training=False)
    if info.aux_weights:
        assert isinstance(outputs, list)
    outputs = as_list(outputs)
    assert len(outputs) == 1 + len(info.aux_weights)
    assert len(info.aux_loss_kinds) == len(info.aux_weights)
    # A "boundary" output is one channel of boundary logits; the others are class logits.
    for output, kind in zip(outputs, ("ce", *info.aux_loss_kinds), strict=True):
        channels = 1 if kind == "boundary" else NUM_CLASSES
        assert tuple(output.shape) == (*images.shape[:3], channels), kind
        assert output.dtype == tf.float32
        assert np.all(np.isfinite(output.numpy()))


@pytest.mark.parametrize("name", NAMES)
def test_mixed_precision_gives_float32_logits(name: str) -> None:
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build(name)
        logits = model(images_for(name), training=False)
        assert logits.dtype == tf.float32
        assert np.all(np.isfinite(logits.numpy()))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert keras.mixed_precision.global_policy().name == previous


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_training_steps_lower_the_loss(name: str) -> None:
    model = build(name)
    images = tf.constant(images_for(name, seed=1))
    # A learnable target (two classes, left and right halves) so that the drop in loss is far
    # above the noise of dropout; a band of ignored pixels on top.
    height, width = images.shape[1:3]
    labels = np.full(images.shape[:3], 3, dtype="int32")
    labels[:, :, width // 2 :] = 11
    labels[:, : height // 8, :] = IGNORE
    labels = tf.constant(labels)
    optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    losses = []
    for _ in range(4):
        with tf.GradientTape() as tape:
            loss = masked_loss(labels, as_list(model(images, training=True))[0])
        gradients = tape.gradient(loss, model.trainable_variables)
        assert all(g is not None for g in gradients), "every trainable weight gets a gradient"
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.95 * losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_keras_save_load_round_trip(name: str, tmp_path) -> None:
    model = cached(name)
    images = images_for(name, batch=1, seed=3)
    path = tmp_path / f"{name.replace('+', 'plus')}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        model(images, training=False).numpy(), loaded(images, training=False).numpy()
    )
    # Through JSON, as the .keras file stores it (tuples come back as lists).
    assert json.loads(json.dumps(loaded.get_config())) == json.loads(json.dumps(model.get_config()))
    assert models.count_params(loaded) == models.count_params(model)


@pytest.mark.parametrize("name", NAMES)
def test_invalid_size_names_nearest_valid_sizes(name: str) -> None:
    multiple = models.get_info(name).size_multiple
    assert multiple > 1
    height, width = small_size(name)
    with pytest.raises(ValueError, match=re.escape(f"{height}x{width}")) as error:
        models.build_model(name, (height + 1, width, 3))
    assert "nearest" in str(error.value).lower()
    assert f"{height + 1}x{width}" in str(error.value)


@pytest.mark.parametrize("name", NAMES)
def test_param_count_matches_reference(name: str) -> None:
    """Counted at two small sizes: equal counts show it is also the 1024x2048 count."""
    info = models.get_info(name)
    count = models.count_params(cached(name))
    height, width = small_size(name)
    other = models.count_params(build(name, (2 * height, width)))
    assert count == other, "trainable parameters must not depend on the input size"
    if info.reference_params is None:
        return  # no published figure to compare with
    assert abs(count - info.reference_params) <= 0.05 * info.reference_params, (
        f"{name}: {count:,} trainable parameters, reference {info.reference_params:,.0f}"
    )


def test_unknown_model_name_lists_the_names() -> None:
    with pytest.raises(ValueError) as error:
        models.build_model("no_such_model", (32, 64, 3))
    for name in NAMES:
        assert name in str(error.value)
    with pytest.raises(ValueError, match="no_such_model"):
        models.get_info("no_such_model")


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(ValueError, match="no_such_option"):
        models.build_model("unet", (32, 64, 3), no_such_option=1)


@pytest.mark.parametrize("name", ["unet", "separable_unet", "bayes_segnet"])
def test_weights_option_loads_a_weights_file(name: str, tmp_path) -> None:
    model = cached(name)
    path = tmp_path / f"{name}.weights.h5"
    model.save_weights(path)
    keras.utils.set_random_seed(1)
    loaded = models.build_model(name, (*small_size(name), 3), weights=str(path))
    images = images_for(name, batch=1)
    np.testing.assert_array_equal(
        model(images, training=False).numpy(), loaded(images, training=False).numpy()
    )
    with pytest.raises(ValueError, match="not found"):
        models.build_model(name, (*small_size(name), 3), weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="no pretrained weights"):
        models.build_model(name, (*small_size(name), 3), weights="imagenet")


@pytest.mark.parametrize("name", NAMES)
def test_batch_norm_settings_of_the_reference_implementation(name: str) -> None:
    """Every BatchNormalization layer gets ModelInfo.batch_norm (backbone epsilon where set)."""
    info = models.get_info(name)
    spec = info.batch_norm
    assert 0.0 <= spec.momentum < 1.0 and 0.0 < spec.epsilon <= 1e-3 and spec.source
    model = build(name)
    layers = [
        x
        for x in models.registry.all_layers(model)
        if isinstance(x, keras.layers.BatchNormalization)
    ]
    assert layers, name
    for layer in layers:
        assert layer.momentum == spec.momentum, (name, layer.name)
        in_backbone = bool(info.backbone_prefixes) and layer.name.startswith(info.backbone_prefixes)
        expected = spec.backbone_epsilon if in_backbone and spec.backbone_epsilon else spec.epsilon
        assert layer.epsilon == expected, (name, layer.name)
    overridden = models.build_model(name, (*small_size(name), 3), bn_momentum=0.5)
    assert {
        x.momentum
        for x in models.registry.all_layers(overridden)
        if isinstance(x, keras.layers.BatchNormalization)
    } == {0.5}
