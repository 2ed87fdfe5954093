"""FastFCN (ResNet + JPU) and HRNetV2 + OCR: the parts the registry harness does not check."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from models import build_model, count_params
from models.backbones import resnet as resnet_module
from models.backbones.hrnet import HRNET_CONFIGS
from models.backbones.resnet import imagenet_weights_file, resnet_features
from models.fastfcn import ContextEncoding
from models.hrnet_ocr import object_context
from models.layers import normalize_input
from utils.errors import BadInput

H, W = 64, 96  # small, multiples of 32, not square


@pytest.fixture(scope="module")
def fastfcn_model() -> keras.Model:
    """Default FastFCN (ResNet-50, EncNet head) with the auxiliary head."""
    keras.utils.set_random_seed(0)
    return build_model("fastfcn", (H, W, 3), aux=True)


@pytest.fixture(scope="module", params=[48, 18])
def hrnet_model(request) -> keras.Model:
    """HRNetV2 + OCR at widths 48 and 18."""
    keras.utils.set_random_seed(0)
    return build_model("hrnet_ocr", (64, 64, 3), width=request.param)


def _params(model: keras.Model, prefixes: tuple[str, ...]) -> int:
    """Trainable parameters of the layers whose names start with one of `prefixes`."""
    return sum(
        int(np.prod(w.shape))
        for layer in model.layers
        if layer.name.startswith(prefixes)
        for w in layer.trainable_weights
    )


# ----------------------------------------------------------------------------- FastFCN


def test_jpu_output_has_2048_channels_at_one_eighth(fastfcn_model):
    model = fastfcn_model
    assert model.get_layer("conv3_block4_out").output.shape[1:] == (H // 8, W // 8, 512)
    assert model.get_layer("conv4_block6_out").output.shape[1:] == (H // 16, W // 16, 1024)
    assert model.get_layer("conv5_block3_out").output.shape[1:] == (H // 32, W // 32, 2048)
    assert model.get_layer("jpu_concat").output.shape[1:] == (H // 8, W // 8, 1536)
    for rate in (1, 2, 4, 8):
        depthwise = model.get_layer(f"jpu_dilation{rate}_dw")
        assert tuple(depthwise.dilation_rate) == (rate, rate)
        assert model.get_layer(f"jpu_dilation{rate}_relu").output.shape[-1] == 512
    assert model.get_layer("jpu_out").output.shape[1:] == (H // 8, W // 8, 2048)
    outputs = model(np.zeros((1, H, W, 3), "float32"), training=False)
    assert [tuple(o.shape) for o in outputs] == [(1, H, W, 19)] * 2


@pytest.mark.parametrize(
    ("backbone", "head", "first_head_layer"),
    [
        ("resnet50", "psp", "psp_pool6"),
        ("resnet50", "aspp", "aspp_conv36"),
        ("resnet101", "encnet", "enc_encoding"),
    ],
)
def test_fastfcn_backbones_and_heads_build(backbone, head, first_head_layer):
    model = build_model("fastfcn", (H, W, 3), num_classes=5, backbone=backbone, head=head)
    model.get_layer(first_head_layer)
    if backbone == "resnet101":
        assert model.get_layer("conv4_block23_out").output.shape[1:] == (H // 16, W // 16, 1024)
    logits = model.predict(np.full((1, H, W, 3), 128.0, "float32"), verbose=0)
    assert logits.shape == (1, H, W, 5)
    assert logits.dtype == np.float32
    assert np.isfinite(logits).all()


def test_fastfcn_rejects_unknown_options():
    with pytest.raises(ValueError, match="head"):
        build_model("fastfcn", (H, W, 3), head="fcn")
    with pytest.raises(ValueError, match="resnet18"):
        build_model("fastfcn", (H, W, 3), backbone="resnet18")


def test_context_encoding_matches_numpy_reference():
    rng = np.random.default_rng(0)
    layer = ContextEncoding(4)
    x = rng.normal(size=(2, 3, 5, 6)).astype("float32")
    out = keras.ops.convert_to_numpy(layer(x))
    codewords = keras.ops.convert_to_numpy(layer.codewords)
    scale = keras.ops.convert_to_numpy(layer.scale)
    assert out.shape == (2, 4, 6)
    for b in range(2):
        pixels = x[b].reshape(-1, 6)
        residuals = pixels[:, None, :] - codewords[None, :, :]  # (N, K, D)
        logits = scale[None, :] * (residuals**2).sum(-1)
        assign = np.exp(logits - logits.max(1, keepdims=True))
        assign /= assign.sum(1, keepdims=True)
        expected = (assign[:, :, None] * residuals).sum(0)
        np.testing.assert_allclose(out[b], expected, rtol=1e-4, atol=1e-4)
    clone = ContextEncoding.from_config(layer.get_config())
    assert clone.num_codes == 4


@pytest.mark.parametrize("suffix", [".weights.h5", "_legacy.h5"])
def test_resnet_weights_from_a_local_file(tmp_path, suffix):
    keras.utils.set_random_seed(1)
    reference = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(64, 64, 3)
    )
    path = tmp_path / f"resnet50{suffix}"
    if suffix == ".weights.h5":
        reference.save_weights(path)
    else:  # the format of Keras' ImageNet files (saved by Keras 2)
        import h5py
        from keras.src.legacy.saving import legacy_h5_format

        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, reference)

    inputs = keras.Input((64, 64, 3))
    features = keras.Model(
        inputs, resnet_features(normalize_input(inputs, "caffe"), "resnet50", str(path))
    )
    for name in ("conv2_block1_1_conv", "conv4_block6_3_bn", "conv5_block3_3_conv"):
        for ours, theirs in zip(
            features.get_layer(name).get_weights(),
            reference.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(ours, theirs)
    kernel = features.get_layer("conv1_conv").get_weights()[0]
    np.testing.assert_array_equal(
        kernel, reference.get_layer("conv1_conv").get_weights()[0][:, :, ::-1]
    )

    # RGB into our backbone == Keras' caffe preprocessing (BGR, mean subtracted) into theirs.
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    ours = features.predict(images, verbose=0)[2]
    theirs = reference.predict(
        keras.applications.resnet50.preprocess_input(images.copy()), verbose=0
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3 * np.abs(theirs).max())


def test_resnet_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    inputs = keras.Input((64, 64, 3))
    with pytest.raises(BadInput, match="does not exist"):
        resnet_features(inputs, "resnet50", str(tmp_path / "missing.h5"))

    def offline(*args, weights=None, **kwargs):
        if weights == "imagenet":
            raise Exception("URL fetch failure: Name or service not known")
        return keras.applications.ResNet101(*args, weights=weights, **kwargs)

    monkeypatch.setitem(
        resnet_module.RESNETS, "resnet101", (offline, resnet_module.RESNETS["resnet101"][1])
    )
    expected = imagenet_weights_file("resnet101")
    assert expected.parts[-2:] == (
        "models",
        "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )
    with pytest.raises(BadInput) as info:
        resnet_features(inputs, "resnet101", "imagenet")
    assert str(expected) in str(info.value) and "URL fetch failure" in str(info.value)


# ----------------------------------------------------------------------------- HRNet + OCR


def test_hrnet_branches_have_the_published_widths_and_strides(hrnet_model):
    width = int(hrnet_model.name.split("_")[1][1:])
    for i in range(4):
        shape = hrnet_model.get_layer(f"hrnet_branch{i + 1}").output.shape
        assert shape[1:] == (64 // 4 // 2**i, 64 // 4 // 2**i, width * 2**i)
    assert hrnet_model.get_layer("hrnet_concat").output.shape[1:] == (16, 16, 15 * width)
    config = HRNET_CONFIGS[width]
    names = {layer.name for layer in hrnet_model.layers}
    for stage, modules in zip((2, 3, 4), config.modules, strict=True):
        assert f"stage{stage}_m{modules}_b{stage}_block{config.blocks}_conv2" in names
        assert f"stage{stage}_m{modules + 1}_b1_block1_conv1" not in names
    assert f"stage1_block{config.stage1_blocks}_conv3" in names
    # the exchange unit: 1/4 -> 1/32 takes three strided convs
    assert hrnet_model.get_layer("stage4_m1_fuse4_from1_down3").strides == (2, 2)


def test_hrnet_ocr_parameter_counts(hrnet_model):
    width = int(hrnet_model.name.split("_")[1][1:])
    total = count_params(hrnet_model)
    ocr = _params(hrnet_model, ("ocr_conv3x3", "ocr_attention", "ocr_fuse", "ocr_classifier"))
    # backbone + soft-region head = HRNetV2's own segmentation model
    published = {48: (70.3e6, 65.8e6), 18: (None, 3.9e6)}[width]
    if published[0] is not None:
        assert abs(total - published[0]) / published[0] < 0.05
    assert abs(total - ocr - published[1]) / published[1] < 0.05


def test_ocr_context_follows_the_soft_regions():
    keras.utils.set_random_seed(3)
    pixels = keras.Input((6, 7, 32))
    regions = keras.Input((6, 7, 5))
    objects, context = object_context(pixels, regions)
    block = keras.Model([pixels, regions], [objects, context])
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(1, 6, 7, 32)).astype("float32")
    first = rng.normal(size=(1, 6, 7, 5)).astype("float32") * 3
    second = rng.normal(size=(1, 6, 7, 5)).astype("float32") * 3

    obj1, ctx1 = block.predict([feats, first], verbose=0)
    obj1_again, ctx1_again = block.predict([feats, first], verbose=0)
    _, ctx2 = block.predict([feats, second], verbose=0)

    # gathered object vectors: softmax of each region over the pixels, weighted pixel sum
    probs = np.exp(first[0].reshape(42, 5))
    probs /= probs.sum(0, keepdims=True)
    np.testing.assert_allclose(obj1[0], probs.T @ feats[0].reshape(42, 32), rtol=1e-4, atol=1e-5)
    assert ctx1.shape == (1, 6, 7, 32)
    np.testing.assert_array_equal(ctx1, ctx1_again)
    np.testing.assert_array_equal(obj1, obj1_again)
    per_pixel_change = np.abs(ctx1 - ctx2).max(axis=-1)
    assert (per_pixel_change > 1e-6).all()


def test_hrnet_options_and_weights_file(tmp_path):
    with pytest.raises(ValueError, match="width"):
        build_model("hrnet_ocr", (64, 64, 3), width=32)
    with pytest.raises(ValueError, match="backbone"):
        build_model("hrnet_ocr", (64, 64, 3), backbone="w32")
    with pytest.raises(ValueError, match="contradicts"):
        build_model("hrnet_ocr", (64, 64, 3), width=18, backbone="w48")
    with pytest.raises(ValueError, match="ImageNet"):
        build_model("hrnet_ocr", (64, 64, 3), width=18, weights="imagenet")

    keras.utils.set_random_seed(2)
    model = build_model("hrnet_ocr", (64, 64, 3), backbone="w18", aux=True)
    assert model.get_layer("hrnet_branch1").output.shape[-1] == 18
    path = tmp_path / "hrnet_w18.weights.h5"
    model.save_weights(path)
    restored = build_model("hrnet_ocr", (64, 64, 3), width=18, aux=True, weights=str(path))
    images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    for a, b in zip(
        model.predict(images, verbose=0), restored.predict(images, verbose=0), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
