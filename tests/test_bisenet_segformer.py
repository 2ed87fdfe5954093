"""BiSeNetV2 and SegFormer: the parts the registry harness (tests/test_models.py) does not check.

BiSeNetV2's branch widths and resolutions and its bilateral guided aggregation; SegFormer's
variant widths against keras-hub's presets and its non-square fix of keras-hub's MiT;
parameters and multiply-adds at 1024x2048 against the published figures; the exact
equivalents used for PyTorch constructs; the --variant option. Full-resolution models are
built (symbolically) and traced, never run.
"""

from __future__ import annotations

import argparse
import re

import keras
import keras_hub
import numpy as np
import pytest
from keras_hub.src.models.mit.mit_presets import backbone_presets as MIT_PRESETS

from bench.flops import model_macs
from models import build_model, count_params, get_info
from models.bisenetv2 import bilateral_guided_aggregation
from models.options import add_model_args, model_options
from models.segformer import VARIANTS as SEGFORMER_VARIANTS
from models.segformer import DivLayerNormalization, SpatialMiTBackbone, mit_config

FULL = (1024, 2048)
H, W = FULL
_BUILT: dict[tuple[str, str | None], keras.Model] = {}


def full_size(name: str, variant: str | None = None) -> keras.Model:
    """`name` / `variant` built at 1024x2048 (once per test session, never run)."""
    if (name, variant) not in _BUILT:
        keras.utils.set_random_seed(0)
        options = {"variant": variant} if variant else {}
        _BUILT[name, variant] = build_model(name, (*FULL, 3), **options)
    return _BUILT[name, variant]


def shape(model: keras.Model, layer: str) -> tuple[int, ...]:
    """(H, W, C) of a layer's output."""
    return tuple(int(d) for d in model.get_layer(layer).output.shape[1:])


# --------------------------------------------------------------------------- BiSeNetV2


def test_bisenetv2_branches():
    model = full_size("bisenetv2")
    # Detail branch: 64 at 1/2, 64 at 1/4, 128 at 1/8 (wide and shallow).
    assert shape(model, "detail_s1_conv2_relu") == (H // 2, W // 2, 64)
    assert shape(model, "detail_s2_conv3_relu") == (H // 4, W // 4, 64)
    assert shape(model, "detail_s3_conv3_relu") == (H // 8, W // 8, 128)
    # Semantic branch: stem 16 at 1/4, GE stages 32 at 1/8, 64 at 1/16, 128 at 1/32, CE.
    assert shape(model, "stem_fuse_relu") == (H // 4, W // 4, 16)
    assert shape(model, "s3_ge2_relu") == (H // 8, W // 8, 32)
    assert shape(model, "s4_ge2_relu") == (H // 16, W // 16, 64)
    assert shape(model, "s5_ge4_relu") == (H // 32, W // 32, 128)
    assert shape(model, "ce_gap_bn") == (1, 1, 128)
    assert shape(model, "ce_conv_last_relu") == (H // 32, W // 32, 128)
    # GE expansion 6 on the depthwise convs.
    assert shape(model, "s3_ge1_dwconv1") == (H // 8, W // 8, 16 * 6)
    assert shape(model, "s5_ge2_dwconv") == (H // 32, W // 32, 128 * 6)
    # BGA at 1/8 and 1/32, head at 1/8 (640 wide), logits at the input size.
    assert shape(model, "bga_detail_down_pool") == (H // 32, W // 32, 128)
    assert shape(model, "bga_semantic_upsample") == (H // 8, W // 8, 128)
    assert shape(model, "bga_conv_relu") == (H // 8, W // 8, 128)
    assert shape(model, "head_conv_relu") == (H // 8, W // 8, 640)
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(H, W, 19)]


def test_bga_combines_the_two_branches_as_the_paper():
    """BGA(d, s) = conv(keep(d) * sigmoid(up4(bn(conv(s)))) + up4(down(d) * sigmoid(keep(s))))."""
    detail_in, semantic_in = keras.Input((8, 16, 128)), keras.Input((2, 4, 128))
    keras.utils.set_random_seed(0)
    bga = keras.Model(
        [detail_in, semantic_in], bilateral_guided_aggregation(detail_in, semantic_in)
    )
    rng = np.random.default_rng(0)
    d = rng.normal(size=(1, 8, 16, 128)).astype("float32")
    s = rng.normal(size=(1, 2, 4, 128)).astype("float32")
    out = bga([d, s]).numpy()
    assert out.shape == (1, 8, 16, 128)
    # Each branch guides the other: changing either input changes the detail-path output.
    s2 = s.copy()
    s2[0, 0, 0] += 3.0  # one semantic position: changes a whole 4x4 block of the 1/8 output
    changed = np.abs(bga([d, s2]).numpy() - out).max(-1)[0] > 1e-6
    assert changed[:4, :4].all()
    assert not np.array_equal(bga([d * 2.0, s]).numpy(), out)

    def run(prefix: str, x):
        for layer in bga.layers:
            if layer.name.startswith(prefix) and not layer.name.endswith("_sigmoid"):
                x = layer(x, training=False)
        return x

    def sigmoid(x):
        return 1.0 / (1.0 + np.exp(-np.asarray(x)))

    def up4(x):
        return np.repeat(np.repeat(np.asarray(x), 4, axis=1), 4, axis=2)

    keep_d = run("bga_detail_keep", d)
    down_d = run("bga_detail_down", d)
    up_s = run("bga_semantic_up_conv", s)  # conv + BN (the sigmoid and x4 come below)
    keep_s = run("bga_semantic_keep", s)
    fused = keep_d * sigmoid(up4(up_s)) + up4(down_d * sigmoid(keep_s))
    expected = run("bga_conv", fused)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_bisenetv2_booster_heads():
    info = get_info("bisenetv2")
    assert info.aux_weights == (1.0, 1.0, 1.0, 1.0)
    model = build_model("bisenetv2", (64, 128, 3), aux=True)
    names = ["head_logits", "aux2_logits", "aux3_logits", "aux4_logits", "aux5_4_logits"]
    assert [shape(model, n) for n in names] == [(64, 128, 19)] * 5
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(64, 128, 19)] * 5
    # Booster heads on the stem (1/4) and semantic stages 3, 4, 5 (1/8, 1/16, 1/32), their
    # second conv up_factor^2 wide after a nearest x2.
    for name, stride in (("aux2", 4), ("aux3", 8), ("aux4", 16), ("aux5_4", 32)):
        assert shape(model, f"{name}_conv_relu") == (64 // stride, 128 // stride, 128)
        assert shape(model, f"{name}_conv2_relu") == (128 // stride, 256 // stride, stride**2)


def test_padding_equivalents_of_pytorch_pooling():
    """ZeroPadding2D(1) + valid pooling is AvgPool2d(3, 2, 1) (padding counted) and, on a
    non-negative input, MaxPool2d(3, 2, 1) (padding -inf); UpSampling2D(4) is nearest x4."""
    rng = np.random.default_rng(2)
    x = rng.uniform(0.0, 1.0, size=(1, 8, 12, 3)).astype("float32")
    model = build_model("bisenetv2", (64, 64, 3))
    pad = model.get_layer("bga_detail_down_pad")
    got_avg = keras.ops.convert_to_numpy(model.get_layer("bga_detail_down_pool")(pad(x)))
    got_max = keras.ops.convert_to_numpy(model.get_layer("stem_right_pool")(pad(x)))
    zero = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    neg = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    windows = [[(2 * i, 2 * j) for j in range(6)] for i in range(4)]
    avg = np.array([[zero[0, a : a + 3, b : b + 3].mean((0, 1)) for a, b in r] for r in windows])
    mx = np.array([[neg[0, a : a + 3, b : b + 3].max((0, 1)) for a, b in r] for r in windows])
    np.testing.assert_allclose(got_avg[0], avg, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_max[0], mx, rtol=1e-6, atol=1e-6)
    up = keras.ops.convert_to_numpy(model.get_layer("bga_semantic_upsample")(x))
    np.testing.assert_array_equal(up, np.repeat(np.repeat(x, 4, axis=1), 4, axis=2))


def test_bisenetv2_compute_against_the_paper():
    """Within 5% of the paper's 21.15 GFLOPs (multiply-adds) at 512x1024, 84.6 G at 1024x2048,
    with the 640-wide main head; the reference code's 1024-wide head is 16% above it. Counted
    by hand: every conv of the inference graph (the booster heads are not in it) is a 3x3 or
    1x1 conv or depthwise conv of a known width at a known stride."""
    published = get_info("bisenetv2").published_for()
    assert published.params is None  # no published parameter count
    model = full_size("bisenetv2")
    compute = model_macs(model, FULL)
    assert compute.unknown_shapes == []
    assert abs(compute.gmacs - published.gmacs) <= 0.05 * published.gmacs, compute.gmacs
    by_hand = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):  # DepthwiseConv2D is not a Conv2D
            h, w, c = (int(d) for d in layer.output.shape[1:])
            k = layer.kernel_size[0] * layer.kernel_size[1]
            by_hand += h * w * k * int(layer.input.shape[-1]) * c
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            h, w, c = (int(d) for d in layer.output.shape[1:])
            by_hand += h * w * layer.kernel_size[0] * layer.kernel_size[1] * c
    assert compute.macs == by_hand
    # The main head's 3x3 conv and classifier; at 1024 wide the total is 16% above the paper.
    per_channel = (H // 8) * (W // 8) * (9 * 128 + 19)
    assert model.get_layer("head_conv").filters == 640
    wide = (compute.macs + (1024 - 640) * per_channel) / 1e9
    assert wide > 1.15 * published.gmacs, wide


# --------------------------------------------------------------------------- SegFormer


def test_segformer_variants_are_keras_hubs_presets():
    """Hidden dims as documented for MiT-B0..B5 (keras-hub's MiTBackbone docstring: b0
    [32, 64, 160, 256]), block counts as keras-hub's mit_b*_cityscapes_1024 presets."""
    assert SEGFORMER_VARIANTS["b0"][0] == (32, 64, 160, 256)
    for variant, (dims, depths, decoder) in SEGFORMER_VARIANTS.items():
        if variant != "b0":
            assert dims == (64, 128, 320, 512), variant
        assert decoder == (256 if variant in ("b0", "b1") else 768), variant
        description = MIT_PRESETS[f"mit_{variant}_cityscapes_1024"]["metadata"]["description"]
        blocks = int(re.search(r"with (\d+) transformer blocks", description).group(1))
        assert sum(depths) == blocks, (variant, depths, description)
    assert {key.split("_")[1] for key in MIT_PRESETS} == set(SEGFORMER_VARIANTS)
    # keras-hub's SegFormer preset parameter counts (19-class classifier included).
    from keras_hub.src.models.segformer.segformer_presets import presets

    for variant in ("b0", "b1"):
        expected = presets[f"segformer_{variant}_cityscapes_1024"]["metadata"]["params"]
        count = count_params(full_size("segformer", variant))
        assert abs(count - expected) <= 1e-4 * expected, (variant, count, expected)


def test_spatial_mit_is_keras_hubs_mit_and_also_runs_non_square():
    """On a square image SpatialMiTBackbone is keras-hub's MiTBackbone (same weights, same
    outputs); keras-hub's own fails on a non-square image, ours runs."""
    config = mit_config("b0", (64, 64, 3))
    keras.utils.set_random_seed(0)
    ours, theirs = SpatialMiTBackbone(**config), keras_hub.models.MiTBackbone(**config)
    assert [w.shape for w in ours.weights] == [w.shape for w in theirs.weights]
    theirs.set_weights(ours.get_weights())
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-5)

    wide = mit_config("b0", (32, 64, 3))
    x = np.random.default_rng(1).normal(size=(1, 32, 64, 3)).astype("float32")
    with pytest.raises(Exception, match="reshape"):
        keras_hub.models.MiTBackbone(**wide)(x)
    assert tuple(SpatialMiTBackbone(**wide)(x).shape) == (1, 1, 2, 256)


def test_div_layer_norm_is_keras_layer_norm():
    """The TensorRT-friendly layer norm (Sqrt + Div, no Rsqrt) equals Keras' with its weights."""
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, size=(2, 5, 7)).astype("float32")
    ours, theirs = (
        DivLayerNormalization(epsilon=1e-6),
        keras.layers.LayerNormalization(epsilon=1e-6),
    )
    ours.build(x.shape), theirs.build(x.shape)
    weights = [rng.normal(size=(7,)).astype("float32") for _ in range(2)]
    ours.set_weights(weights), theirs.set_weights(weights)
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-5)


def test_segformer_decoder_and_logits():
    model = full_size("segformer", "b0")
    decoder = model.get_layer("segformer")
    assert tuple(decoder.output.shape[1:]) == (H // 4, W // 4, 256)
    encoder = decoder.image_encoder
    assert [tuple(encoder.pyramid_outputs[f"P{i}"].shape[1:]) for i in range(1, 5)] == [
        (H // 4, W // 4, 32),
        (H // 8, W // 8, 64),
        (H // 16, W // 16, 160),
        (H // 32, W // 32, 256),
    ]
    assert shape(model, "head_classifier") == (H // 4, W // 4, 19)
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(H, W, 19)]
    # No training-only heads: aux=True gives the one output.
    assert len(build_model("segformer", (32, 64, 3), aux=True).outputs) == 1


@pytest.mark.parametrize("variant", ["b0", "b1"])
def test_segformer_params_and_compute_match_the_paper(variant):
    """Parameters within 5% of the paper's (its 150-class ADE20K head: 0.03M more for b0/b1
    than our 19-class one) and multiply-adds at 1024x2048 within 5% of its Cityscapes table."""
    published = get_info("segformer").published[variant]
    model = full_size("segformer", variant)
    count = count_params(model)
    assert abs(count - published.params) <= 0.05 * published.params, (count, published)
    compute = model_macs(model, FULL)
    assert compute.unknown_shapes == []
    assert abs(compute.gmacs - published.gmacs) <= 0.05 * published.gmacs, compute.gmacs


# --------------------------------------------------------------------------- options


def test_variant_option_and_errors():
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    assert model_options(parser.parse_args(["-m", "segformer", "--variant", "b2"])) == {
        "variant": "b2"
    }
    help_text = parser.format_help()
    assert "segformer" in help_text and "b5" in help_text
    info = get_info("segformer")
    assert info.variant_option == "variant" and list(info.published) == list(SEGFORMER_VARIANTS)
    with pytest.raises(ValueError, match="segformer variant must be one of b0, b1, b2, b3"):
        build_model("segformer", (64, 64, 3), variant="b6")
    with pytest.raises(ValueError, match="download"):
        build_model("segformer", (64, 64, 3), weights="imagenet")
    with pytest.raises(ValueError, match="no Keras ImageNet weights"):
        build_model("bisenetv2", (64, 64, 3), weights="imagenet")
    with pytest.raises(ValueError, match="takes no option 'variant'"):
        build_model("bisenetv2", (64, 64, 3), variant="b0")
