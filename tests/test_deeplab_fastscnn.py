"""Checks specific to Fast-SCNN, DeepLabV3+ and their backbones (the registry harness does the rest)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import models
from models import deeplabv3plus, fastscnn
from models.backbones import mobilenetv2, xception
from models.layers import AdaptiveAveragePooling2D
from utils.errors import BadInput


def adaptive_avg_pool_reference(x: np.ndarray, bins: int) -> np.ndarray:
    """PyTorch AdaptiveAvgPool2d semantics in plain numpy loops (NHWC)."""
    n, h, w, c = x.shape
    out = np.zeros((n, bins, bins, c), dtype=np.float64)
    for i in range(bins):
        h0, h1 = math.floor(i * h / bins), math.ceil((i + 1) * h / bins)
        for j in range(bins):
            w0, w1 = math.floor(j * w / bins), math.ceil((j + 1) * w / bins)
            out[:, i, j, :] = x[:, h0:h1, w0:w1, :].mean(axis=(1, 2))
    return out


# ---------------------------------------------------------------------------- Fast-SCNN


def test_fastscnn_params_match_paper():
    model = models.build_model("fastscnn", (1024, 2048, 3))
    params = models.count_params(model)
    assert fastscnn.INFO.reference_params == pytest.approx(1.11e6)
    assert abs(params - 1.11e6) / 1.11e6 < 0.05, params


@pytest.mark.parametrize("shape", [(2, 7, 11, 5), (1, 2, 3, 4), (1, 12, 12, 2)])
def test_adaptive_pooling_matches_numpy(shape):
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    for bins in (1, 2, 3, 6):
        got = np.asarray(AdaptiveAveragePooling2D(bins)(x))
        np.testing.assert_allclose(got, adaptive_avg_pool_reference(x, bins), rtol=1e-5, atol=1e-5)


def test_fastscnn_pyramid_pooling_adapts_to_non_divisible_size():
    # 224x352 gives a 7x11 feature at 1/32: no bin count divides it.
    model = models.build_model("fastscnn", (224, 352, 3))
    gfe = model.get_layer("ppm_bin1_pool").input
    assert tuple(gfe.shape[1:3]) == (7, 11)
    pools = [model.get_layer(f"ppm_bin{b}_pool").output for b in fastscnn.PPM_BINS]
    probe = keras.Model(model.input, [gfe, *pools])
    images = np.random.default_rng(1).uniform(0, 255, (2, 224, 352, 3)).astype("float32")
    feature, *pooled = (np.asarray(t) for t in probe(images, training=False))
    for bins, got in zip(fastscnn.PPM_BINS, pooled, strict=True):
        assert got.shape == (2, bins, bins, 128)
        np.testing.assert_allclose(
            got, adaptive_avg_pool_reference(feature, bins), rtol=1e-4, atol=1e-5
        )
    # 128 -> 4 x 32 pooled channels -> 128: not the seed's oversized module.
    assert model.get_layer("ppm_bin6_conv").filters == 32
    assert model.get_layer("ppm_out").filters == 128


def test_fastscnn_fusion_and_strides():
    model = models.build_model("fastscnn", (64, 128, 3))
    dwconv = model.get_layer("ffm_dwconv")
    assert dwconv.dilation_rate == (4, 4)
    assert dwconv.kernel_size == (3, 3)
    assert tuple(model.get_layer("ltd_dsconv2_pwconv_relu").output.shape[1:]) == (8, 16, 64)
    assert tuple(model.get_layer("ppm_out_relu").output.shape[1:]) == (2, 4, 128)
    assert tuple(model.get_layer("ffm_upsample").output.shape[1:3]) == (8, 16)
    assert tuple(model.get_layer("ffm_relu").output.shape[1:]) == (8, 16, 128)


def test_fastscnn_aux_heads():
    model = models.build_model("fastscnn", (64, 64, 3), num_classes=5, aux=True)
    outputs = model(np.zeros((1, 64, 64, 3), "float32"), training=False)
    assert len(outputs) == 1 + len(fastscnn.INFO.aux_weights)
    assert fastscnn.INFO.aux_weights == (0.4, 0.4)
    assert all(tuple(o.shape) == (1, 64, 64, 5) for o in outputs)
    # Auxiliary heads are training-only: the main model has none of their parameters.
    plain = models.build_model("fastscnn", (64, 64, 3), num_classes=5)
    assert models.count_params(model) > models.count_params(plain)


# ---------------------------------------------------------------------------- DeepLabV3+


@pytest.mark.parametrize("backbone", ["mobilenetv2", "xception"])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_deeplab_really_runs_at_output_stride(backbone, output_stride):
    h, w = 64, 96
    model = models.build_model(
        "deeplabv3+", (h, w, 3), num_classes=7, backbone=backbone, output_stride=output_stride
    )
    module = mobilenetv2 if backbone == "mobilenetv2" else xception
    channels = 320 if backbone == "mobilenetv2" else 2048
    low_channels = 24 if backbone == "mobilenetv2" else 256
    features = model.get_layer(module.FEATURE_LAYER).output
    assert tuple(features.shape[1:]) == (h // output_stride, w // output_stride, channels)
    low = model.get_layer(module.LOW_LEVEL_LAYER).output
    assert tuple(low.shape[1:]) == (h // 4, w // 4, low_channels)
    # Decoder skip: the 1/4 feature reduced to 48 channels, concatenated with the upsampled ASPP.
    assert tuple(model.get_layer("decoder_skip_conv_relu").output.shape[1:]) == (16, 24, 48)
    assert tuple(model.get_layer("decoder_concat").output.shape[1:]) == (16, 24, 256 + 48)
    # ASPP rates per stride, image pooling resized to the feature size.
    rates = deeplabv3plus.ASPP_RATES[output_stride]
    assert rates == ((6, 12, 18) if output_stride == 16 else (12, 24, 36))
    for i, rate in enumerate(rates, start=1):
        assert model.get_layer(f"aspp_sepconv{i}_depthwise").dilation_rate == (rate, rate)
    assert tuple(model.get_layer("aspp_pool_upsample").output.shape[1:3]) == tuple(
        features.shape[1:3]
    )
    assert model.get_layer("aspp_dropout").rate == pytest.approx(0.1)
    # Strides past the output stride became dilation.
    if backbone == "mobilenetv2":
        last = model.get_layer("block_16_depthwise").dilation_rate
        assert last == ((2, 2) if output_stride == 16 else (4, 4))
    else:
        middle = model.get_layer("middle_unit1_sepconv1_depthwise").dilation_rate
        exit2 = model.get_layer("exit_block2_sepconv1_depthwise").dilation_rate
        assert (middle, exit2) == (((1, 1), (2, 2)) if output_stride == 16 else ((2, 2), (4, 4)))
    out = model(np.zeros((1, h, w, 3), "float32"), training=False)
    assert tuple(out.shape) == (1, h, w, 7)


def test_xception_params_match_reference():
    # Parameter counts do not depend on the input size: count at a small one.
    small = models.build_model("deeplabv3+", (64, 64, 3), backbone="xception")
    params = models.count_params(small)
    reference = deeplabv3plus.INFO.published["xception"].params
    assert reference == pytest.approx(41.3e6)
    assert abs(params - reference) / reference < 0.05, params
    os8 = models.build_model("deeplabv3+", (64, 64, 3), backbone="xception", output_stride=8)
    assert models.count_params(os8) == params


def test_deeplab_sizes_and_options():
    with pytest.raises(ValueError, match="64x128"):
        models.build_model("deeplabv3+", (72, 128, 3))
    models.build_model("deeplabv3+", (72, 128, 3), output_stride=8)  # 72 = 9 x 8 is fine at OS 8
    with pytest.raises(ValueError, match="output_stride"):
        models.build_model("deeplabv3+", (64, 64, 3), output_stride=32)
    with pytest.raises(ValueError, match="backbone"):
        models.build_model("deeplabv3+", (64, 64, 3), backbone="resnet")
    with pytest.raises(ValueError, match="Xception-65"):
        models.build_model("deeplabv3+", (64, 64, 3), backbone="xception", weights="imagenet")
    # No auxiliary heads in the paper: aux=True builds the same single-output model.
    assert deeplabv3plus.INFO.aux_weights == ()
    with_aux = models.build_model("deeplabv3+", (32, 32, 3), num_classes=3, aux=True)
    without = models.build_model("deeplabv3+", (32, 32, 3), num_classes=3)
    assert len(with_aux.outputs) == 1
    assert models.count_params(with_aux) == models.count_params(without)


# ---------------------------------------------------------------------------- MobileNetV2 weights


@pytest.fixture(scope="module")
def mobilenetv2_weights_file(tmp_path_factory):
    """A randomly initialised keras.applications MobileNetV2 (no top) saved to .weights.h5."""
    reference = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), include_top=False, weights=None
    )
    # Non-default batch-norm statistics, so copying them is visible too.
    rng = np.random.default_rng(2)
    for layer in reference.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [rng.uniform(0.5, 1.5, v.shape).astype("float32") for v in layer.get_weights()]
            )
    path = tmp_path_factory.mktemp("weights") / "mobilenetv2.weights.h5"
    reference.save_weights(path)
    return path, reference


def test_mobilenetv2_weights_from_local_file(mobilenetv2_weights_file):
    path, reference = mobilenetv2_weights_file
    model = models.build_model("deeplabv3+", (64, 64, 3), weights=str(path))
    for name in ("Conv1", "block_5_project", "block_13_depthwise", "block_16_project_BN"):
        for got, want in zip(
            model.get_layer(name).get_weights(),
            reference.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(got, want)


def test_mobilenetv2_matches_keras_applications_at_stride_32(mobilenetv2_weights_file):
    # Undilated, the feature extractor is keras.applications' network layer for layer.
    path, reference = mobilenetv2_weights_file
    # deeplabv3+'s path: mobilenetv2_features, then load_mobilenetv2_weights by layer name.
    inputs = keras.Input((96, 96, 3))
    _, features = mobilenetv2.mobilenetv2_features(inputs, output_stride=32)
    ours = keras.Model(inputs, features)
    mobilenetv2.load_mobilenetv2_weights(ours, str(path))
    theirs = keras.Model(reference.input, reference.get_layer("block_16_project_BN").output)
    x = np.random.default_rng(3).uniform(-1, 1, (2, 96, 96, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), rtol=1e-4, atol=1e-4)


def test_mobilenetv2_missing_weights_errors(tmp_path, monkeypatch):
    with pytest.raises(BadInput, match="not found"):
        models.build_model("deeplabv3+", (64, 64, 3), weights=str(tmp_path / "missing.h5"))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    from keras.src.utils import file_utils

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(BadInput) as error:
        models.build_model("deeplabv3+", (64, 64, 3), weights="imagenet")
    message = str(error.value)
    assert mobilenetv2.imagenet_weights_path() in message
    assert mobilenetv2.IMAGENET_FILE in message


@pytest.mark.parametrize("momentum", [None, 0.5])
def test_batch_norm_settings_keep_pretrained_weights(mobilenetv2_weights_file, momentum):
    """TF DeepLab's decay everywhere (or --bn-momentum), epsilon 1e-5 in the head and the
    backbone's own 1e-3; the keras.applications weights load all the same."""
    path, reference = mobilenetv2_weights_file
    model = models.build_model("deeplabv3+", (64, 64, 3), weights=str(path), bn_momentum=momentum)
    bns = {x.name: x for x in model.layers if isinstance(x, keras.layers.BatchNormalization)}
    want = 0.9997 if momentum is None else momentum
    assert {x.momentum for x in bns.values()} == {want}
    assert bns["block_16_project_BN"].epsilon == 1e-3  # the backbone's, as pretrained
    head = [
        x
        for n, x in bns.items()
        if not n.startswith(models.get_info("deeplabv3+").backbone_prefixes)
    ]
    assert head and {x.epsilon for x in head} == {1e-5}
    for got, want_w in zip(
        bns["block_16_project_BN"].get_weights(),
        reference.get_layer("block_16_project_BN").get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want_w)
