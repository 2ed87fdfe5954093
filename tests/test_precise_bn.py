"""training.precise_bn: moving statistics = the plain average of the batches' statistics."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.precise_bn import PreciseBatchNorm, batch_norm_layers, precise_bn_batches
from training.trainer import make_optimizer

BATCH, BATCHES = 4, 5


def bn_model() -> keras.Model:
    """Input -> BN (frozen) and Input -> BN -> conv: the first BN sees the images themselves."""
    inputs = keras.Input((3, 5, 2))
    first = keras.layers.BatchNormalization(momentum=0.99, name="bn1")
    x = first(inputs)
    x = keras.layers.Conv2D(2, 1, name="conv")(x)
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    return keras.Model(inputs, frozen(x))


def data(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(3.0, 2.0, (BATCH * BATCHES, 3, 5, 2)).astype(np.float32)


def expected(images: np.ndarray, replicas: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over batches and replicas of each replica's per-channel batch mean and variance."""
    means, variances = [], []
    for batch in np.split(images, BATCHES):
        for part in np.split(batch, replicas):
            means.append(part.mean(axis=(0, 1, 2)))
            variances.append(part.var(axis=(0, 1, 2)))  # biased, as Keras' batch norm uses
    return np.mean(means, axis=0), np.mean(variances, axis=0)


def test_average_of_batch_statistics_and_nothing_else_changes():
    keras.utils.set_random_seed(0)
    model = bn_model()
    optimizer = make_optimizer("sgd", 0.1, 0.9)
    optimizer.build(model.trainable_variables)
    images = data()
    before = {v.path: v.numpy().copy() for v in model.weights}
    slots = [v.numpy().copy() for v in optimizer.variables]
    strategy = tf.distribute.get_strategy()
    dataset = tf.data.Dataset.from_tensor_slices((images, images[..., 0])).batch(BATCH)
    precise = PreciseBatchNorm(model, strategy)
    assert [layer.name for layer in precise.layers] == ["bn1"]  # the frozen one keeps its own
    result = precise.update(iter(dataset), BATCHES)
    assert (result.images, result.batches, result.layers) == (BATCH * BATCHES, BATCHES, 1)
    bn1 = model.get_layer("bn1")
    mean, variance = expected(images, 1)
    np.testing.assert_allclose(bn1.moving_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), variance, rtol=1e-5)
    assert bn1.momentum == 0.99  # put back
    for variable in model.weights:  # only bn1's moving statistics changed
        if variable.path.startswith("bn1/moving"):
            continue
        np.testing.assert_array_equal(variable.numpy(), before[variable.path])
    for slot, value in zip(optimizer.variables, slots, strict=True):
        np.testing.assert_array_equal(slot.numpy(), value)
    # A second call averages afresh (not an exponential average of the two).
    precise.update(iter(dataset.map(lambda x, y: (x * 2.0, y))), BATCHES)
    np.testing.assert_allclose(bn1.moving_mean.numpy(), 2 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), 4 * variance, rtol=1e-5)


def test_batch_count_covers_the_images_at_most_one_pass():
    assert precise_bn_batches(256, 2975, 8) == 32
    assert precise_bn_batches(256, 10, 4) == 3  # 10 training images: one pass, rounded up
    assert precise_bn_batches(1, 10, 4) == 1
    assert batch_norm_layers(bn_model())[0].name == "bn1"


MIRRORED = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tests.test_precise_bn import BATCH, BATCHES, bn_model, data, expected
    from training.precise_bn import PreciseBatchNorm

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = bn_model()
    images = data()
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((images, images[..., 0])).batch(BATCH))
    result = PreciseBatchNorm(model, strategy).update(iter(dataset), BATCHES)
    assert result.images == BATCH * BATCHES, result
    bn1 = model.get_layer("bn1")
    mean, variance = expected(images, 2)
    for name, want in (("moving_mean", mean), ("moving_variance", variance)):
        copies = [v.numpy() for v in getattr(bn1, name).value.values]
        assert len(copies) == 2
        for copy in copies:  # every replica holds the average over both replicas
            np.testing.assert_allclose(copy, want, rtol=1e-5)
    print("ok")
""")


def test_mirrored_strategy_every_replica_gets_the_average(repo_root):
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(repo_root)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=repo_root,
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("count", ["0", "4"])
def test_train_cli_reports_the_cost_or_runs_without(count, synthetic_root, tmp_path, run_cli):
    out = tmp_path / "run"
    done = run_cli(
        "train.py", "-m", "fastscnn", "-p", str(synthetic_root), "-t", "64,128", "-b", "2",
        "-e", "1", "--steps-per-epoch", "1", "--precise-bn", count, "--output-dir", str(out),
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    header = "precise batch norm: the statistics of"
    row = (out / "log.csv").read_text().splitlines()
    fields = dict(zip(row[0].split(","), row[1].split(","), strict=True))
    if count == "0":
        assert header not in done.stdout and fields["precise_bn_s"] == ""
    else:
        assert "re-estimated from 4 training images" in done.stdout
        assert int(fields["precise_bn_images"]) == 4 and float(fields["precise_bn_s"]) > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precise-bn", "-1"], "--precise-bn"),
        (["--precise-bn", "many"], "--precise-bn"),
        (["--bn-momentum", "1.5"], "batch-norm momentum must be in [0, 1)"),
    ],
)
def test_bad_batch_norm_options(args, message, synthetic_root, run_cli):
    done = run_cli("train.py", "-m", "fastscnn", "-p", str(synthetic_root), *args, timeout=120)
    assert done.returncode == 2
    assert len(done.error_lines) == 1 and message in done.error_lines[0], done.stderr
