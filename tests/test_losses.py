"""The losses PIDNet and the real-time papers train with (training.trainer).

OHEM on hand-made probabilities, on the main output and on "main"-kind auxiliary heads
(BiSeNetV2's boosters); the boundary map of a two-region label and of ignored pixels
(against the PIDNet reference's cv2.Canny ground truth); the boundary and boundary-awareness
losses on tiny hand-computed cases; their normalisation under two replicas against one process;
a few PIDNet training steps; the --loss options of train.py and the recipes' OHEM settings;
AdamW's decoupled weight decay against Keras' Adam plus the hand-applied decay.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

import models
import train
from training.config import TrainConfig
from training.trainer import (
    Trainer,
    boundary_map,
    loss_options,
    make_optimizer,
    ohem_cross_entropy,
)

IGNORE = 255


def two_class_logits(probabilities) -> np.ndarray:
    """Logits (..., 2) whose softmax gives class 0 the probabilities `probabilities`."""
    p = np.asarray(probabilities, np.float64)
    return np.stack([np.log(p), np.log1p(-p)], axis=-1).astype(np.float32)


def loss_trainer(num_classes: int = 2, **losses) -> Trainer:
    """A Trainer over a tiny [main, p_aux, boundary] model (only its loss settings matter)."""
    inputs = keras.Input((4, 6, 3))
    outputs = [
        keras.layers.Conv2D(num_classes, 1, name="main")(inputs),
        keras.layers.Conv2D(num_classes, 1, name="p_aux")(inputs),
        keras.layers.Conv2D(1, 1, name="boundary")(inputs),
    ]
    model = keras.Model(inputs, outputs)
    options = {"aux_losses": ("ce", "boundary"), "boundary_awareness": True, **losses}
    return Trainer(
        model,
        make_optimizer("sgd", 0.1),
        tf.distribute.get_strategy(),
        num_classes,
        aux_weights=(0.4, 20.0),
        **options,
    )


def step_losses(
    outputs, labels, aux_weights=(0.4, 20.0), **losses
) -> tuple[dict[str, float], keras.Model]:
    """One real training step (Trainer.train_step) of a [main, p_aux, boundary] model whose
    outputs are `outputs` (1x1 convolutions that select them from their concatenation, the
    images): its losses ("main_loss"; "aux_loss", the weighted aux, boundary and bas terms) and
    the model after the step."""
    outputs = [np.asarray(o, np.float32) for o in outputs]
    images = np.concatenate(outputs, axis=-1)
    inputs = keras.Input(images.shape[1:])
    heads, start = [], 0
    for name, output in zip(("main", "p_aux", "boundary"), outputs, strict=True):
        channels = output.shape[-1]
        head = keras.layers.Conv2D(channels, 1, name=name)
        heads.append(head(inputs))
        select = np.zeros((1, 1, images.shape[-1], channels), np.float32)
        select[0, 0, start + np.arange(channels), np.arange(channels)] = 1.0
        head.set_weights([select, np.zeros(channels, np.float32)])
        start += channels
    model = keras.Model(inputs, heads)
    options = {"aux_losses": ("ce", "boundary"), "boundary_awareness": True, **losses}
    trainer = Trainer(
        model,
        make_optimizer("sgd", 0.1),
        tf.distribute.get_strategy(),
        outputs[0].shape[-1],
        aux_weights=aux_weights,
        **options,
    )
    result = trainer.train_step((tf.constant(images), tf.constant(labels, tf.uint8)))
    return result, model


# ----------------------------------------------------------------------------------------------
# OHEM
# ----------------------------------------------------------------------------------------------

#: Probability of the true class (0) per pixel; the last pixel is unlabelled.
PROBABILITIES = [0.95, 0.5, 0.99, 0.2, 0.85, 0.92, 0.6, 0.1]
LABELS = [0, 0, 0, 0, 0, 0, 0, IGNORE]


def ohem(min_kept: int, thresh: float = 0.9) -> tuple[float, float]:
    """(kept sum, kept count) of OHEM over PROBABILITIES."""
    labels = tf.constant([LABELS], tf.int32)
    valid = labels != IGNORE
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.where(valid, labels, 0), logits=two_class_logits([PROBABILITIES])
    )
    total, count = ohem_cross_entropy(ce, valid, tf.cast(valid, tf.float32), thresh, min_kept)
    return float(total), float(count)


def ce_of(*probabilities: float) -> float:
    return -sum(math.log(p) for p in probabilities)


def test_ohem_keeps_exactly_the_pixels_predicted_below_the_threshold():
    # 4 labelled pixels are below 0.9 and min_kept is 2: those 4, not the unlabelled 0.1.
    total, count = ohem(min_kept=2)
    assert count == 4
    assert total == pytest.approx(ce_of(0.5, 0.2, 0.85, 0.6), rel=1e-5)


def test_ohem_keeps_min_kept_hardest_when_fewer_are_below_the_threshold():
    # Sorted labelled probabilities: 0.2 0.5 0.6 0.85 0.92 0.95 0.99; index 5 is 0.95.
    total, count = ohem(min_kept=5)
    assert count == 5
    assert total == pytest.approx(ce_of(0.2, 0.5, 0.6, 0.85, 0.92), rel=1e-5)
    # A threshold of 0.3 alone keeps only 0.2; min_kept 3 adds the next two hardest.
    total, count = ohem(min_kept=3, thresh=0.3)
    assert count == 3 and total == pytest.approx(ce_of(0.2, 0.5, 0.6), rel=1e-5)
    # More than the labelled pixels: the reference's index n - 1 keeps all but the easiest.
    total, count = ohem(min_kept=131072)
    assert count == 6 and total == pytest.approx(ce_of(0.95, 0.5, 0.2, 0.85, 0.92, 0.6), rel=1e-5)


def test_ohem_is_the_main_loss_and_aux_heads_keep_cross_entropy():
    logits = two_class_logits(np.reshape(PROBABILITIES, (1, 2, 4)))
    labels = np.reshape(LABELS, (1, 2, 4))
    outputs = [logits, logits, np.zeros((1, 2, 4, 1), np.float32)]
    options = {"loss": "ohem", "ohem_thresh": 0.9, "ohem_min_kept": 2}
    # The boundary head weighs 0: the aux loss is the cross-entropy head's alone.
    losses, _ = step_losses(outputs, labels, (0.4, 0.0), boundary_awareness=False, **options)
    assert losses["main_loss"] == pytest.approx(ce_of(0.5, 0.2, 0.85, 0.6) / 4, rel=1e-5)
    # The cross-entropy head keeps plain cross-entropy over the 7 labelled pixels.
    assert losses["aux_loss"] == pytest.approx(0.4 * ce_of(*PROBABILITIES[:7]) / 7, rel=1e-5)
    assert losses["loss"] == pytest.approx(losses["main_loss"] + losses["aux_loss"], rel=1e-6)


def test_ohem_also_mines_the_aux_heads_of_kind_main():
    """BiSeNetV2's booster heads ("main" kind) take the main output's loss: OHEM under --loss
    ohem, each head mined on its own logits; cross-entropy under --loss ce."""
    logits = two_class_logits(np.reshape(PROBABILITIES, (1, 2, 4)))
    # The aux head is sure of every pixel but two: 0.3 and 0.8 are below 0.9.
    aux_probabilities = [0.99, 0.3, 0.99, 0.99, 0.8, 0.99, 0.99, 0.5]
    aux = two_class_logits(np.reshape(aux_probabilities, (1, 2, 4)))
    labels = np.reshape(LABELS, (1, 2, 4))
    outputs = [logits, aux, np.zeros((1, 2, 4, 1), np.float32)]
    # The boundary head weighs 0: the aux loss is the booster head's alone.
    kinds = {"aux_losses": ("main", "boundary"), "boundary_awareness": False}
    losses, _ = step_losses(
        outputs, labels, (0.4, 0.0), loss="ohem", ohem_thresh=0.9, ohem_min_kept=1, **kinds
    )
    assert losses["main_loss"] == pytest.approx(ce_of(0.5, 0.2, 0.85, 0.6) / 4, rel=1e-5)
    # The aux head's own pixels below 0.9: 0.3 and 0.8 (not the unlabelled 0.5).
    assert losses["aux_loss"] == pytest.approx(0.4 * ce_of(0.3, 0.8) / 2, rel=1e-5)
    # A threshold of 0.2 keeps none; min_kept 1 raises it to 0.8 (index 1): 0.3 alone.
    losses, _ = step_losses(
        outputs, labels, (0.4, 0.0), loss="ohem", ohem_thresh=0.2, ohem_min_kept=1, **kinds
    )
    assert losses["aux_loss"] == pytest.approx(0.4 * ce_of(0.3), rel=1e-5)
    # Under cross-entropy the "main" kind is plain cross-entropy over the 7 labelled pixels.
    losses, _ = step_losses(outputs, labels, (0.4, 0.0), loss="ce", **kinds)
    assert losses["aux_loss"] == pytest.approx(0.4 * ce_of(*aux_probabilities[:7]) / 7, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# The boundary map
# ----------------------------------------------------------------------------------------------


def reference_boundaries(label: np.ndarray) -> np.ndarray:
    """The PIDNet authors' ground truth (datasets/base_dataset.py): Canny edges of the label
    map dilated by a 4x4 kernel (without its clearing of the image border)."""
    edge = cv2.Canny(label, 0.1, 0.2)
    return (cv2.dilate(edge, np.ones((4, 4), np.uint8), iterations=1) > 50).astype(np.float32)


def brute_force_boundaries(label: np.ndarray, radius: int = 2) -> np.ndarray:
    """1 where another value lies within `radius` pixels (Chebyshev), inside the image."""
    height, width = label.shape
    out = np.zeros(label.shape, np.float32)
    for y in range(height):
        for x in range(width):
            window = label[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
            out[y, x] = float(np.any(window != label[y, x]))
    return out


def test_boundary_map_of_a_two_region_label():
    label = np.zeros((8, 12), np.uint8)
    label[:, 6:] = 13  # the change is between columns 5 and 6
    edges = boundary_map(tf.constant(label[None]))[0].numpy()
    expected = np.zeros_like(edges)
    expected[:, 4:8] = 1.0  # a 4-pixel band centred on the change, on every row
    np.testing.assert_array_equal(edges, expected)
    # The reference's band is as wide (its one-pixel Canny edge sits on one side).
    reference = reference_boundaries(label)
    assert reference[:, :].sum(axis=1).tolist() == [4.0] * 8
    assert edges.sum(axis=1).tolist() == reference.sum(axis=1).tolist()
    # A horizontal change, and the image border is no boundary.
    flat = boundary_map(tf.constant(np.zeros((1, 5, 5), np.uint8)))
    assert float(tf.reduce_sum(flat)) == 0.0
    np.testing.assert_array_equal(boundary_map(tf.constant(label.T[None]))[0].numpy(), expected.T)


def test_ignored_pixels_are_one_more_value_as_in_the_reference():
    label = np.full((12, 12), 7, np.uint8)
    label[3:9, 3:9] = IGNORE
    label[10:, :2] = 2
    edges = boundary_map(tf.constant(label[None]))[0].numpy()
    np.testing.assert_array_equal(edges, brute_force_boundaries(label))
    assert edges[3, 3] == 1 and edges[1, 5] == 1  # both sides of class | ignore
    assert edges[5, 5] == 0 and edges[6, 6] == 0  # the inside of the ignored block
    assert edges[0, 0] == 0
    # Canny on the label map, as the reference does, also finds the border of the ignored
    # block on each of its four sides (its bands are shifted by a pixel here and there).
    reference = reference_boundaries(label)
    for side in (reference[0:6, 5], reference[6:12, 5], reference[5, 0:6], reference[5, 6:12]):
        assert side.sum() >= 4
    for side in (edges[0:6, 5], edges[6:12, 5], edges[5, 0:6], edges[5, 6:12]):
        assert side.sum() == 4


# ----------------------------------------------------------------------------------------------
# The boundary loss and the boundary-awareness loss
# ----------------------------------------------------------------------------------------------

#: Two rows of a change between columns 2 and 3: boundary columns 1-4, 8 of 12 pixels.
TWO_REGIONS = np.array([[[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1]]], np.uint8)
#: The same with one ignored pixel.
WITH_IGNORED = np.array([[[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, IGNORE]]], np.uint8)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_boundary_loss_on_a_hand_computed_case():
    # The cross-entropy head weighs 0: the aux loss is the boundary loss alone (weight 20).
    def boundary_loss(outputs, labels):
        losses, _ = step_losses(outputs, labels, (0.0, 20.0), boundary_awareness=False)
        return losses["aux_loss"]

    edges = boundary_map(tf.constant(TWO_REGIONS))[0].numpy()
    assert edges.tolist() == [[0, 1, 1, 1, 1, 0]] * 2
    x, y = 1.5, -0.5  # boundary logits on boundary pixels and on the others
    boundary_logits = np.where(edges == 1, x, y).astype(np.float32)[None, ..., None]
    zeros = np.zeros((1, 2, 6, 2), np.float32)
    # 8 boundary pixels of 12: boundary pixels weigh the other share, 4/12, the others 8/12;
    # BCE with logits is softplus(-x) on boundaries and softplus(y) off them; mean over all 12.
    expected = (8 * (4 / 12) * softplus(-x) + 4 * (8 / 12) * softplus(y)) / 12
    loss = boundary_loss([zeros, zeros, boundary_logits], TWO_REGIONS)
    assert loss == pytest.approx(20.0 * expected, rel=1e-5)
    # An ignored pixel is one more value and still counts (as in the reference): (1, 5) and
    # its neighbour (0, 5) become boundary pixels, 10 of 12.
    edges = boundary_map(tf.constant(WITH_IGNORED))[0].numpy()
    assert edges.tolist() == [[0, 1, 1, 1, 1, 1]] * 2
    boundary_logits = np.where(edges == 1, x, y).astype(np.float32)[None, ..., None]
    expected = (10 * (2 / 12) * softplus(-x) + 2 * (10 / 12) * softplus(y)) / 12
    loss = boundary_loss([zeros, zeros, boundary_logits], WITH_IGNORED)
    assert loss == pytest.approx(20.0 * expected, rel=1e-5)


def test_boundary_awareness_loss_on_a_hand_computed_case():
    probabilities = np.array([[[0.9, 0.3, 0.6, 0.2, 0.7, 0.5], [0.8, 0.4, 0.1, 0.35, 0.45, 0.5]]])
    # P(class 0) as above: the true class 1 pixels (columns 3-5) get 1 - p.
    main = two_class_logits(probabilities)
    # sigmoid(2) = 0.88 > 0.8 selects; sigmoid(1) = 0.73 does not. The ignored pixel (1, 5)
    # is selected but unlabelled.
    boundary = np.array([[[2, 1, 2, 2, 1, 1], [1, 2, 1, 1, 2, 2]]], np.float32)[..., None]
    # The aux and boundary heads weigh 0: the aux loss is the boundary-awareness term alone.
    losses, model = step_losses([main, main, boundary], WITH_IGNORED, (0.0, 0.0))
    selected = [0.9, 0.6, 1 - 0.2, 0.4, 1 - 0.45]  # (0, 0) (0, 2) (0, 3) (1, 1) (1, 4)
    assert losses["aux_loss"] == pytest.approx(ce_of(*selected) / 5, rel=1e-5)
    # No gradient reaches the boundary head through the selection: the step left it as it was
    # (an identity selection of its channel), while the main head learned.
    kernel, bias = model.get_layer("boundary").get_weights()
    assert kernel[0, 0, :, 0].tolist() == [0.0] * 4 + [1.0] and bias.tolist() == [0.0]
    assert model.get_layer("main").get_weights()[1].tolist() != [0.0, 0.0]
    # Nothing above 0.8: the term is 0, not NaN.
    quiet, _ = step_losses([main, main, np.zeros_like(boundary)], WITH_IGNORED, (0.0, 0.0))
    assert quiet["aux_loss"] == 0.0


def test_loss_settings_are_checked():
    with pytest.raises(ValueError, match="boundary awareness needs a 'boundary'"):
        loss_trainer(aux_losses=("ce", "ce"))
    with pytest.raises(ValueError, match="loss must be one of ce, ohem, got 'focal'"):
        loss_trainer(loss="focal")
    with pytest.raises(ValueError, match="output 2 .* has 1 channels, but its 'ce' loss needs 2"):
        loss_trainer(aux_losses=("ce", "ce"), boundary_awareness=False)
    with pytest.raises(ValueError, match="OHEM threshold must be in"):
        loss_trainer(ohem_thresh=1.5)


# ----------------------------------------------------------------------------------------------
# Several replicas: the global terms match one process; OHEM and BAS are the replicas' mean
# ----------------------------------------------------------------------------------------------

REPLICAS = textwrap.dedent("""
    import json
    import sys

    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from training.trainer import Trainer, make_optimizer

    rng = np.random.default_rng(0)
    LABELS = rng.integers(0, 3, (4, 8, 12)).astype(np.uint8)
    LABELS[:, :, :5] = 1
    LABELS[0, :, 9:] = 255  # the halves differ in labelled and boundary pixels
    OUTPUTS = [
        rng.normal(0, 2, (4, 8, 12, 3)).astype(np.float32),
        rng.normal(0, 2, (4, 8, 12, 3)).astype(np.float32),
        rng.normal(1, 2, (4, 8, 12, 1)).astype(np.float32),
    ]

    #: aux weights and boundary awareness: the aux loss is the cross-entropy head and the
    #: boundary loss (global counts), or the boundary-awareness term alone (replicas' mean).
    SETTINGS = {"heads": ((0.4, 20.0), False), "bas": ((0.0, 0.0), True)}

    def losses(strategy, loss, setting, outputs, labels):
        # main_loss and aux_loss of one real training step of a model whose outputs are
        # `outputs` (1x1 convolutions selecting them from their concatenation, the images)
        aux_weights, awareness = SETTINGS[setting]
        images = np.concatenate(outputs, axis=-1)
        with strategy.scope():
            inputs = keras.Input(images.shape[1:])
            convs = [keras.layers.Conv2D(o.shape[-1], 1) for o in outputs]
            model = keras.Model(inputs, [conv(inputs) for conv in convs])
            start = 0
            for conv, output in zip(convs, outputs):
                channels = output.shape[-1]
                select = np.zeros((1, 1, images.shape[-1], channels), np.float32)
                select[0, 0, start + np.arange(channels), np.arange(channels)] = 1.0
                conv.set_weights([select, np.zeros(channels, np.float32)])
                start += channels
            trainer = Trainer(
                model, make_optimizer("sgd", 0.1), strategy, 3, aux_weights, loss=loss,
                ohem_min_kept=20, aux_losses=("ce", "boundary"), boundary_awareness=awareness,
            )
        if strategy.num_replicas_in_sync == 1:
            batch = (tf.constant(images), tf.constant(labels))
        else:

            def share(context):
                part = slice(2 * context.replica_id_in_sync_group, None)
                part = slice(part.start, part.start + 2)
                return tf.constant(images[part]), tf.constant(labels[part])

            batch = strategy.experimental_distribute_values_from_function(share)
        result = trainer.train_step(batch)
        return {"main": result["main_loss"], "aux": result["aux_loss"]}

    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one = tf.distribute.get_strategy()
    out = {}
    for loss in ("ce", "ohem"):
        for setting in SETTINGS:
            out[f"{loss} {setting}"] = {
                "two": losses(two, loss, setting, OUTPUTS, LABELS),
                "one": losses(one, loss, setting, OUTPUTS, LABELS),
                "halves": [
                    losses(one, loss, setting, [o[h] for o in OUTPUTS], LABELS[h])
                    for h in (slice(0, 2), slice(2, 4))
                ],
            }
    print(json.dumps(out))
""")


def test_two_replicas_normalise_as_one_process(tmp_path, repo_root):
    script = tmp_path / "replicas.py"
    script.write_text(REPLICAS)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(script), str(repo_root)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, result in out.items():
        two, one, halves = result["two"], result["one"], result["halves"]
        # Cross-entropy (main under --loss ce, the aux head) and the boundary loss: global
        # counts, exactly one process; OHEM (main under --loss ohem) and BAS: each replica's own
        # mean, averaged over the replicas.
        main_is_global = name.startswith("ce")
        aux_is_global = name.endswith("heads")
        for key, is_global in (("main", main_is_global), ("aux", aux_is_global)):
            want = one[key] if is_global else (halves[0][key] + halves[1][key]) / 2
            assert two[key] == pytest.approx(want, rel=1e-5), (name, key)
    assert out["ce bas"]["two"]["aux"] != pytest.approx(out["ce bas"]["one"]["aux"], rel=1e-3)


# ----------------------------------------------------------------------------------------------
# PIDNet trains with its losses
# ----------------------------------------------------------------------------------------------


def test_pidnet_training_steps_lower_the_loss():
    options = loss_options(config_of("-m", "pidnet", "-t", "64,64", "-b", "2"))
    assert options["loss"] == "ohem" == models.get_info("pidnet").recipe.loss
    assert options["aux_losses"] == ("ce", "boundary") and options["boundary_awareness"]
    keras.utils.set_random_seed(0)
    model = models.build_model("pidnet", (64, 64, 3), aux=True)
    trainer = Trainer(
        model,
        make_optimizer("adam", 1e-3),
        tf.distribute.get_strategy(),
        19,
        models.get_info("pidnet").aux_weights,
        **options,
    )
    labels = np.zeros((2, 64, 64), np.uint8)
    labels[:, :, 32:] = 11
    labels[:, 20:24] = IGNORE
    rng = np.random.default_rng(0)
    images = (labels[..., None] % 64) * 3.0 + rng.uniform(0, 60, (2, 64, 64, 3))
    batch = (tf.constant(images, tf.float32), tf.constant(labels))
    losses = [trainer.train_step(batch) for _ in range(4)]
    assert all(math.isfinite(v["loss"]) for v in losses)
    assert losses[0]["aux_loss"] > 0  # P head, boundary and BAS terms
    assert losses[-1]["loss"] < losses[0]["loss"]


# ----------------------------------------------------------------------------------------------
# train.py --loss, --ohem-thresh, --ohem-min-kept
# ----------------------------------------------------------------------------------------------


def config_of(*args: str) -> TrainConfig:
    return TrainConfig.from_recipe(train.build_parser().parse_args(list(args)))


def test_train_options_and_recipe_defaults():
    assert config_of("-m", "pidnet").loss == "ohem"
    assert config_of("-m", "ddrnet").loss == "ohem"
    assert config_of("-m", "fastscnn").loss == "ce"
    assert config_of("-m", "pidnet", "--loss", "ce").loss == "ce"
    config = config_of("-m", "fastscnn", "--loss", "ohem", "--ohem-thresh", "0.7")
    assert (config.loss, config.ohem_thresh, config.ohem_min_kept) == ("ohem", 0.7, 131072)
    assert config_of("-m", "ddrnet", "--ohem-min-kept", "4096").ohem_min_kept == 4096
    config = config_of("-m", "pidnet")
    assert (config.ohem_thresh, config.ohem_min_kept) == (0.9, 131072)


def test_bisenetv2_trains_all_five_outputs_with_its_references_ohem():
    """CoinCheung/BiSeNet: OhemCELoss(0.7) on the main and the four booster heads, keeping at
    least 1/16 of the labelled pixels (of 16 x 512x1024 in the recipe); the options win."""
    config = config_of("-m", "bisenetv2")
    assert (config.loss, config.ohem_thresh) == ("ohem", 0.7)
    assert config.ohem_min_kept == 16 * 512 * 1024 // 16 == 524288
    assert loss_options(config)["aux_losses"] == ("main",) * 4
    config = config_of("-m", "bisenetv2", "--ohem-thresh", "0.8", "--ohem-min-kept", "100")
    assert (config.ohem_thresh, config.ohem_min_kept) == (0.8, 100)
    # The recipe's thresholds are checked like the options.
    with pytest.raises(ValueError, match="recipe OHEM threshold must be in"):
        models.info.Recipe(loss="ohem", ohem_thresh=0.0)


# ----------------------------------------------------------------------------------------------
# AdamW: decoupled weight decay on the kernels L2 decay would take
# ----------------------------------------------------------------------------------------------


def adamw_step(optimizer: str, weight_decay: float) -> tuple[keras.Model, list, dict, float]:
    """(model, its weights before, its weights after, loss) of one Trainer step on a model
    with a conv (kernel + bias), batch norm and a depthwise conv."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, use_bias=False, name="head")(x))
    trainer = Trainer(
        model,
        make_optimizer(optimizer, 0.1),
        tf.distribute.get_strategy(),
        2,
        weight_decay=weight_decay,
    )
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    rng = np.random.default_rng(1)
    images = tf.constant(rng.uniform(0, 1, (2, 4, 6, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 2, (2, 4, 6)), tf.uint8)
    loss = trainer.train_step((images, labels))["loss"]
    return trainer, before, {v.path: v.numpy() for v in model.trainable_variables}, loss


def test_adamw_decays_the_kernels_decoupled_from_the_loss():
    """One AdamW step = the Adam step minus lr x weight decay x the weights before it, on the
    conv and classifier kernels only; no L2 term in the loss."""
    _, before, adam, adam_loss = adamw_step("adam", 0.0)
    trainer, before_w, adamw, adamw_loss = adamw_step("adamw", 0.5)
    assert trainer.decoupled and trainer.decayed == []
    assert adamw_loss == pytest.approx(adam_loss, rel=1e-6)  # no L2 term
    decayed = {"conv/kernel", "head/kernel"}
    assert decayed < set(adam)
    for path, value in adamw.items():
        np.testing.assert_array_equal(before_w[path], before[path])
        expected = adam[path] - (0.1 * 0.5 * before[path] if path in decayed else 0.0)
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-7, err_msg=path)
    # Not decoupled: Adam with weight decay adds the L2 term to the loss instead.
    trainer, *_, l2_loss = adamw_step("adam", 0.5)
    assert not trainer.decoupled and l2_loss > adam_loss
    # An AdamW already built cannot be given its kernels.
    optimizer = make_optimizer("adamw", 0.1)
    optimizer.build(trainer.model.trainable_variables)
    with pytest.raises(ValueError, match="already built"):
        Trainer(trainer.model, optimizer, tf.distribute.get_strategy(), 2, weight_decay=0.5)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ohem-thresh", "0.7"], "error: --ohem-thresh applies to --loss ohem only"),
        (["--loss", "ohem", "--ohem-thresh", "1.5"], "error: --ohem-thresh must be in (0, 1]"),
        (["--loss", "ohem", "--ohem-min-kept", "0"], "--ohem-min-kept"),
        (["--loss", "focal"], "--loss"),
    ],
)
def test_bad_loss_options_exit_2_with_one_line(args, message, capsys):
    try:
        code = train.main(["-m", "fastscnn", "--synthetic", *args])
    except SystemExit as exc:
        code = exc.code
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0], errors
