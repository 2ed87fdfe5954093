"""tf.distribute: a real two-worker MultiWorkerMirroredStrategy run on localhost, and the SLURM
environment read by the resolver (jobs through a real scheduler: tests/test_slurm.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from training.distribute import (
    DistributeInfo,
    make_cluster_resolver,
    make_strategy,
    resolve_mode,
)

# One training script for both sides of the comparison: run as two TF_CONFIG workers with a
# per-replica batch of 2, and as one plain process with the same global batch of 4. The model has
# no batch norm (whose statistics are per replica by design), an auxiliary output, weight decay,
# and labels whose ignored pixels fall unevenly between the workers' shards.
WORKER = textwrap.dedent("""
    import sys

    import numpy as np

    sys.path.insert(0, sys.argv[1])
    mode, out = sys.argv[2], sys.argv[3]
    from training.distribute import make_strategy

    strategy, info = make_strategy(mode)
    import keras
    import tensorflow as tf

    from training.precise_bn import PreciseBatchNorm
    from training.trainer import Trainer, make_optimizer

    GLOBAL_BATCH, STEPS = 4, 3
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (GLOBAL_BATCH * STEPS, 16, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 19, (GLOBAL_BATCH * STEPS, 16, 32), dtype=np.uint8)
    labels[::3, :, :10] = 255

    def dataset_fn(images, labels, training):
        def make(ctx):
            ds = tf.data.Dataset.from_tensor_slices((images, labels))
            ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
            return ds.batch(ctx.get_per_replica_batch_size(GLOBAL_BATCH),
                            drop_remainder=training)
        return make

    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((16, 32, 3))
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
        main = keras.layers.Conv2D(19, 1, name="c2")(x)
        aux = keras.layers.Conv2D(19, 1, name="aux")(x)
        model = keras.Model(inputs, [main, aux])
        optimizer = make_optimizer("sgd", 0.1, 0.9)
    trainer = Trainer(model, optimizer, strategy, 19, aux_weights=(0.4,), weight_decay=1e-3)
    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn(images, labels, True)))
    losses = [trainer.train_step(next(iterator))["loss"] for _ in range(STEPS)]
    # Precise batch norm: every replica of every worker ends with the average over all of them.
    with strategy.scope():
        bn_inputs = keras.Input((16, 32, 3))
        bn_model = keras.Model(bn_inputs, keras.layers.BatchNormalization(name="bn")(bn_inputs))
    stats_data = iter(strategy.distribute_datasets_from_function(dataset_fn(images, labels, True)))
    PreciseBatchNorm(bn_model, strategy).update(stats_data, STEPS)
    bn = bn_model.get_layer("bn")
    np.savez(out, *[np.asarray(w) for w in model.weights], losses=np.array(losses),
             bn_mean=bn.moving_mean.numpy(), bn_var=bn.moving_variance.numpy(),
             worker=info.worker_index, workers=info.num_workers,
             replicas=strategy.num_replicas_in_sync)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_match_each_other_and_one_process(tmp_path, repo_root):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CONFIG", "SLURM_"))}
    base_env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    procs = []
    for index in range(2):
        env = dict(
            base_env,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    str(repo_root),
                    "multiworker",
                    str(tmp_path / f"worker{index}.npz"),
                ],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    procs.append(
        subprocess.Popen(
            [sys.executable, str(script), str(repo_root), "none", str(tmp_path / "single.npz")],
            env=base_env,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    w0, w1, single = (np.load(tmp_path / f"{n}.npz") for n in ("worker0", "worker1", "single"))
    assert (int(w0["worker"]), int(w1["worker"])) == (0, 1)
    assert int(w0["workers"]) == 2 and int(w0["replicas"]) == 2 and int(single["replicas"]) == 1
    weights = [k for k in w0.files if k.startswith("arr_")]
    assert len(weights) == 6
    for key in weights:
        np.testing.assert_array_equal(w0[key], w1[key])
        np.testing.assert_allclose(w0[key], single[key], rtol=0, atol=1e-6)
    # Weights moved and losses are global means.
    assert not np.allclose(w0["arr_0"], 0)
    np.testing.assert_allclose(w0["losses"], single["losses"], rtol=1e-5)
    # Precise batch norm: the plain average of every replica's batch statistics (worker k reads
    # every other image, in batches of 2), the same on both workers.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 16, 32, 3), dtype=np.uint8).astype(np.float64)
    for result, parts in (
        (w0, [images[k::2][2 * b : 2 * b + 2] for b in range(3) for k in (0, 1)]),
        (single, [images[4 * b : 4 * b + 4] for b in range(3)]),
    ):
        mean = np.mean([p.mean(axis=(0, 1, 2)) for p in parts], axis=0)
        var = np.mean([p.var(axis=(0, 1, 2)) for p in parts], axis=0)
        np.testing.assert_allclose(result["bn_mean"], mean, rtol=1e-5)
        np.testing.assert_allclose(result["bn_var"], var, rtol=1e-5)
    np.testing.assert_array_equal(w0["bn_mean"], w1["bn_mean"])
    np.testing.assert_array_equal(w0["bn_var"], w1["bn_var"])


SLURM_ENV = {
    "SLURM_PROCID": "3",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_STEP_NODELIST": "gpu[07-08]",
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    "SLURM_GPUS_ON_NODE": "4",
}


@pytest.fixture
def slurm(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for key, value in SLURM_ENV.items():
        monkeypatch.setenv(key, value)
    # The resolver assigns this task's GPUs through CUDA_VISIBLE_DEVICES: keep ours afterwards.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("SEGBENCH_PORT_BASE", "23456")
    return monkeypatch


def test_slurm_environment_gives_the_cluster(slurm):
    assert resolve_mode("auto", num_gpus=0) == "multiworker"
    resolver, source = make_cluster_resolver()
    assert source == "SLURM"
    spec = resolver.cluster_spec().as_dict()
    assert spec == {"worker": ["gpu07:23456", "gpu07:23457", "gpu08:23456", "gpu08:23457"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 3)
    # 4 GPUs per node, 2 tasks per node: the fourth task gets the node's GPUs 2 and 3.
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_slurm_on_cpu_nodes_and_too_many_tasks(slurm):
    slurm.setenv("SLURM_GPUS_ON_NODE", "0")
    slurm.setenv("CUDA_VISIBLE_DEVICES", "untouched")
    resolver, _ = make_cluster_resolver()
    assert len(resolver.cluster_spec().as_dict()["worker"]) == 4 and resolver.task_id == 3
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "untouched"
    slurm.setenv("SLURM_GPUS_ON_NODE", "1")  # two tasks share one GPU: not possible
    with pytest.raises(ValueError, match="one task per node or per GPU"):
        make_cluster_resolver()


def test_tf_config_wins_over_slurm(slurm):
    slurm.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}),
    )
    resolver, source = make_cluster_resolver()
    assert source == "TF_CONFIG" and resolver.task_id == 1


def test_one_slurm_task_is_not_multiworker(slurm):
    slurm.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert resolve_mode("auto", num_gpus=0) == "none"
    assert resolve_mode("auto", num_gpus=2) == "mirrored"


def test_modes_and_errors(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for key in list(os.environ):
        if key.startswith("SLURM_"):
            monkeypatch.delenv(key)
    assert resolve_mode("none") == "none" and resolve_mode("mirrored") == "mirrored"
    with pytest.raises(ValueError, match="unknown distribution mode"):
        resolve_mode("horovod")
    with pytest.raises(ValueError, match="TF_CONFIG in every process"):
        make_cluster_resolver()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not a valid"):
        resolve_mode("auto")


def test_chief_is_worker_zero():
    assert DistributeInfo("multiworker", 2, 0, 2).is_chief
    assert not DistributeInfo("multiworker", 2, 1, 2).is_chief


def test_multiworker_refuses_one_task_and_a_taken_port(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    env = {"SLURM_PROCID": "0", "SLURM_STEP_NODELIST": "localhost",
           "SLURM_STEP_TASKS_PER_NODE": "1", "SLURM_STEP_NUM_TASKS": "1"}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="needs 2 or more workers, but SLURM names 1"):
        make_strategy("multiworker")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("SEGBENCH_PORT_BASE", str(port))
        with pytest.raises(
            ValueError, match=f"port {port} of this worker .* is taken on this host"
        ):
            make_strategy("multiworker")
