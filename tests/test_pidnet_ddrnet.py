"""PIDNet and DDRNet: the parts the registry harness (tests/test_models.py) does not check.

Branch widths and resolutions, trainable parameters and multiply-adds at 1024x2048 of every
variant against the published figures, the exact equivalents used for PyTorch constructs, and
the --variant option. Shapes, parameters and compute are read from the built (symbolic) model
and its traced graph: nothing here runs a forward pass at full resolution.
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
import pytest

from bench.flops import model_macs
from models import build_model, count_params, get_info
from models.ddrnet import VARIANTS as DDRNET_VARIANTS
from models.options import add_model_args, model_options
from models.pidnet import VARIANTS as PIDNET_VARIANTS
from models.pidnet import PixelSimilarity

FULL = (1024, 2048)
H, W = FULL
_BUILT: dict[tuple[str, str], keras.Model] = {}


def full_size(name: str, variant: str) -> keras.Model:
    """`name` / `variant` built at 1024x2048 (once per test session, never run)."""
    if (name, variant) not in _BUILT:
        keras.utils.set_random_seed(0)
        _BUILT[name, variant] = build_model(name, (*FULL, 3), variant=variant)
    return _BUILT[name, variant]


def shape(model: keras.Model, layer: str) -> tuple[int, ...]:
    """(H, W, C) of a layer's output."""
    return tuple(int(d) for d in model.get_layer(layer).output.shape[1:])


def published_variants() -> list[tuple[str, str]]:
    """(model, variant) pairs with a published parameter figure."""
    return [
        (name, variant)
        for name in ("pidnet", "ddrnet")
        for variant, published in get_info(name).published.items()
        if published.params is not None
    ]


# --------------------------------------------------------------------------- branches


@pytest.mark.parametrize("variant", list(PIDNET_VARIANTS))
def test_pidnet_three_branches(variant):
    m, n, c, _, _ = PIDNET_VARIANTS[variant]
    model = full_size("pidnet", variant)
    assert shape(model, "layer2_out_relu") == (H // 8, W // 8, 2 * c)
    # P branch: 2C at 1/8 through both Pag fusions, 4C after its bottleneck.
    assert shape(model, "pag3_out") == (H // 8, W // 8, 2 * c)
    assert shape(model, f"p_layer4_block{m}_add") == (H // 8, W // 8, 2 * c)
    assert shape(model, "pag4_out") == (H // 8, W // 8, 2 * c)
    assert shape(model, "p_layer5_block1_add") == (H // 8, W // 8, 4 * c)
    # I branch: 4C at 1/16, 8C at 1/32, 16C at 1/64, pyramid pooling to 4C, back to 1/8.
    assert shape(model, "i_layer3_out_relu") == (H // 16, W // 16, 4 * c)
    assert shape(model, f"i_layer3_block{n}_add") == (H // 16, W // 16, 4 * c)
    assert shape(model, "i_layer4_out_relu") == (H // 32, W // 32, 8 * c)
    assert shape(model, "i_layer5_block2_add") == (H // 64, W // 64, 16 * c)
    assert shape(model, "ppm_out") == (H // 64, W // 64, 4 * c)
    assert shape(model, "ppm_upsample") == (H // 8, W // 8, 4 * c)
    # D branch: C (2C for L) then 2C at 1/8, 4C after its bottleneck.
    assert shape(model, "d_add3") == (H // 8, W // 8, c if m == 2 else 2 * c)
    assert shape(model, "d_add4") == (H // 8, W // 8, 2 * c)
    assert shape(model, "d_layer5_block1_add") == (H // 8, W // 8, 4 * c)
    # PAPPM + Light-Bag for S and M, DAPPM + Bag for L.
    light = m == 2
    assert any(x.name == "ppm_process_group1" for x in model.layers) == light
    assert any(x.name == "ppm_process1" for x in model.layers) == (not light)
    assert any(x.name == "dfm_conv_p" for x in model.layers) == light
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(H, W, 19)]


@pytest.mark.parametrize("variant", list(DDRNET_VARIANTS))
def test_ddrnet_two_branches(variant):
    c = DDRNET_VARIANTS[variant][0]
    model = full_size("ddrnet", variant)
    assert shape(model, "layer2_out_relu") == (H // 8, W // 8, 2 * c)
    # High-resolution branch: 2C at 1/8 through both bilateral fusions, 4C at the end.
    for layer in ("high_layer3_block2_add", "fusion3_high", "fusion4_high"):
        assert shape(model, layer) == (H // 8, W // 8, 2 * c), layer
    assert shape(model, "high_layer5_add") == (H // 8, W // 8, 4 * c)
    # Low-resolution branch: 4C at 1/16, 8C at 1/32, 16C at 1/64, DAPPM to 4C.
    assert shape(model, "fusion3_low") == (H // 16, W // 16, 4 * c)
    assert shape(model, "fusion4_low") == (H // 32, W // 32, 8 * c)
    assert shape(model, "low_layer5_add") == (H // 64, W // 64, 16 * c)
    assert shape(model, "dappm_out") == (H // 64, W // 64, 4 * c)
    assert shape(model, "head_input") == (H // 8, W // 8, 4 * c)
    # The fusions' down paths: one s2 conv to 1/16, two to 1/32.
    assert shape(model, "down3") == (H // 16, W // 16, 4 * c)
    assert shape(model, "down4_2") == (H // 32, W // 32, 8 * c)
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(H, W, 19)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # [main, P-branch logits, ONE-channel boundary logits], all at the input size.
        ("pidnet", {"head_logits": 19, "p_head_logits": 19, "d_head_logits": 1}),
        ("ddrnet", {"head_logits": 19, "aux_head_logits": 19}),
    ],
)
def test_aux_heads(name, expected):
    model = build_model(name, (64, 128, 3), aux=True)
    assert [shape(model, layer) for layer in expected] == [(64, 128, c) for c in expected.values()]
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(64, 128, c) for c in expected.values()]
    assert len(model.outputs) == 1 + len(get_info(name).aux_weights)


# --------------------------------------------------------------------------- published figures


@pytest.mark.parametrize(("name", "variant"), published_variants())
def test_params_and_compute_match_the_papers(name, variant):
    """Trainable parameters (without the training-only heads) and G multiply-adds at
    1024x2048 within 5% of the published figures."""
    published = get_info(name).published[variant]
    model = full_size(name, variant)
    count = count_params(model)
    assert abs(count - published.params) <= 0.05 * published.params, (count, published)
    compute = model_macs(model, FULL)
    assert compute.unknown_shapes == []
    assert abs(compute.gmacs - published.gmacs) <= 0.05 * published.gmacs, (compute.gmacs,)


def test_pidnet_m_is_the_released_configuration():
    """PIDNet-M is (m, n, C) = (2, 3, 64) as the authors' code and README: 28.5M parameters
    (the paper's 34.4M row fits n = 4; recorded in ModelInfo without a figure)."""
    assert PIDNET_VARIANTS["m"][:3] == (2, 3, 64)
    assert get_info("pidnet").published["m"].params is None
    model = build_model("pidnet", (64, 64, 3), variant="m")
    assert abs(count_params(model) - 28.54e6) <= 0.01 * 28.54e6


# --------------------------------------------------------------------------- exact equivalents


def test_padded_average_pooling_counts_the_padding():
    """ZeroPadding2D + valid AveragePooling2D is PyTorch's AvgPool2d(5, 2, 2) (padding counted)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 6, 10, 3)).astype("float32")
    model = build_model("ddrnet", (64, 64, 3))
    pad, pool = model.get_layer("dappm_scale1_pad"), model.get_layer("dappm_scale1_pool")
    got = keras.ops.convert_to_numpy(pool(pad(x)))
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    expected = np.stack(
        [
            np.stack(
                [padded[0, 2 * i : 2 * i + 5, 2 * j : 2 * j + 5].mean((0, 1)) for j in range(5)]
            )
            for i in range(3)
        ]
    )[None]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_pixel_similarity_is_a_sigmoid_of_the_channel_dot_product():
    rng = np.random.default_rng(1)
    a, b = (rng.normal(size=(2, 3, 4, 5)).astype("float32") for _ in range(2))
    got = keras.ops.convert_to_numpy(PixelSimilarity()([a, b]))
    expected = 1.0 / (1.0 + np.exp(-(a * b).sum(-1, keepdims=True)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- the option


def test_variant_option_reaches_the_builder():
    parser = argparse.ArgumentParser()
    add_model_args(parser)
    args = parser.parse_args(["-m", "ddrnet", "--variant", "23"])
    assert model_options(args) == {"variant": "23"}
    assert model_options(parser.parse_args(["-m", "ddrnet"])) == {}
    for name in ("pidnet", "ddrnet"):
        info = get_info(name)
        assert info.variant_option == "variant" and "variant" in info.options
    with pytest.raises(ValueError, match="pidnet variant must be one of s, m, l; got 'xl'"):
        build_model("pidnet", (64, 64, 3), variant="xl")
    with pytest.raises(ValueError, match="23-slim, 23"):
        build_model("ddrnet", (64, 64, 3), variant="39")
    with pytest.raises(ValueError, match="takes no option 'variant'"):
        build_model("fastscnn", (64, 64, 3), variant="s")
    with pytest.raises(ValueError, match="no Keras ImageNet weights"):
        build_model("pidnet", (64, 64, 3), weights="imagenet")
