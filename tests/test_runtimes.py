"""The runtime registry (inference/runtimes): every runtime opens a small model, runs it, agrees
with Keras under the one parity rule (inference/parity.py) and reports what ran; a runtime this
machine lacks is skipped with its reason. Parametrised over the registry, as test_models.py is
over the model registry, so a new runtime is tested by registering it.

The reference is Keras itself (`model.predict`), independent of every runtime under test.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from inference import runtimes
from inference.parity import FLOAT32_MAX_DIFF, check, compare, limits
from inference.timing import time_callable
from utils.errors import BadInput

SIZE = (32, 64)


def _tiny_model():
    """A small 19-class model with in-graph normalisation, strided and separable convolutions,
    batch norm with non-trivial statistics and a bilinear resize back to the input size."""
    import keras
    from keras import layers

    from models.layers import logits_output, normalize_input

    keras.utils.set_random_seed(3)
    inputs = keras.Input((*SIZE, 3))
    x = normalize_input(inputs, "imagenet")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(x)
    x = layers.SeparableConv2D(8, 3, padding="same", dilation_rate=2, name="atrous")(x)
    bn = layers.BatchNormalization(name="bn")
    x = bn(x)
    x = layers.Conv2D(19, 1, name="classifier")(x)
    x = layers.Resizing(*SIZE, interpolation="bilinear", name="up")(x)
    model = keras.Model(inputs, logits_output(x), name="tiny")
    rng = np.random.default_rng(0)
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma, beta, rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 2, var.shape)])
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The Keras model, and its exports: NHWC at batch 1, NCHW with a dynamic batch."""
    from deploy.export import export_onnx

    folder = tmp_path_factory.mktemp("runtimes")
    model = _tiny_model()
    files = {"nhwc": folder / "nhwc.onnx", "nchw": folder / "nchw.onnx"}
    export_onnx(model, files["nhwc"], batch=1)
    export_onnx(model, files["nchw"], batch=None, nchw=True)
    return {"model": model, "folder": folder, **files}


def _images(num: int) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (num, *SIZE, 3), dtype=np.uint8)


def _source(name: str, tiny: dict) -> tuple[object, dict]:
    """What runtime `name` opens for the tiny model, and the options it needs."""
    source = runtimes.entry(name).source
    if source == "keras":
        return tiny["model"], {}
    if source == "engine":  # built for this GPU by deploy, as the benchmark and the CLI do
        from deploy.graph import summarize_onnx
        from deploy.tensorrt import build_engine

        engine = build_engine(tiny["nhwc"], tiny["folder"] / "nhwc.engine").path
        return engine, {"metadata": summarize_onnx(tiny["nhwc"]).metadata}
    return tiny["nhwc"], {}


@pytest.mark.parametrize("name", runtimes.RUNTIME_NAMES)
def test_runtime_agrees_with_keras_and_reports_what_ran(name, tiny):
    why = runtimes.available(name)
    if why is not None:
        pytest.skip(f"{name} cannot run here: {why}")
    source, options = _source(name, tiny)
    runtime = runtimes.open_runtime(name, source, threads=1, precision="fp32", **options)
    images = _images(2)  # two batches for a file of batch 1
    got = runtime.run(images)
    want = np.asarray(tiny["model"].predict(images.astype(np.float32), verbose=0))
    assert got.shape == want.shape == (2, *SIZE, 19) and got.dtype == np.float32
    parity = check(got, want, "fp32")
    assert parity.passed, parity.errors
    assert parity.max_abs_diff <= FLOAT32_MAX_DIFF * max(1.0, float(np.abs(want).max()))
    described = runtime.describe()
    assert described["runtime"] == name and described["precision"] == "fp32"
    assert described["runtime_version"] and described["providers"]
    assert runtime.input_size == SIZE and runtime.output_channels == 19
    # bind: the call the timing loop times, on input already in place
    call = runtime.bind(images[:1])
    timed = time_callable(call, warmup_s=0.0, min_iters=2, min_duration_s=0.0)
    assert timed.iterations == 2
    # one image is one batch; a wrong size names the fix
    assert runtime.run(images[0]).shape == (1, *SIZE, 19)
    with pytest.raises(BadInput, match="export at this size"):
        runtime.run(np.zeros((1, SIZE[0] * 2, SIZE[1], 3), np.uint8))


@pytest.mark.parametrize("name", runtimes.ONNX_RUNTIMES)
def test_onnx_runtimes_hide_the_layout_and_take_any_batch(name, tiny):
    """An NCHW file with a dynamic batch: NHWC in, NHWC out, like the NHWC file."""
    why = runtimes.available(name)
    if why is not None:
        pytest.skip(f"{name} cannot run here: {why}")
    runtime = runtimes.open_runtime(name, tiny["nchw"], threads=1)
    assert runtime.nchw and runtime.metadata["layout"] == "NCHW"
    images = _images(3)
    want = np.asarray(tiny["model"].predict(images.astype(np.float32), verbose=0))
    assert check(runtime.run(images), want, "fp32").passed


@pytest.mark.parametrize("name", runtimes.ONNX_RUNTIMES)
def test_a_missing_or_corrupt_file_is_bad_input(name, tmp_path):
    why = runtimes.available(name)
    if why is not None:
        pytest.skip(f"{name} cannot run here: {why}")
    with pytest.raises(BadInput, match="not found; export one with convert_to_onnx.py"):
        runtimes.open_runtime(name, tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(BadInput, match="cannot (load|read)"):
        runtimes.open_runtime(name, bad)


def test_the_registry_names_every_runtime_without_importing_them():
    """Option parsers read the registry; it imports neither numpy nor TensorFlow nor any
    runtime, so --help stays instant."""
    code = (
        "import sys, inference.runtimes as r; "
        "print(','.join(r.RUNTIME_NAMES)); "
        "print(sorted(m for m in ('numpy', 'tensorflow', 'onnxruntime', 'openvino') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    names, imported = done.stdout.strip().splitlines()
    assert names == "tf,xla,onnxruntime,openvino,tensorrt" and imported == "[]"
    for name, entry in runtimes.RUNTIMES.items():
        module = runtimes.module(name)
        assert callable(module.available) and callable(module.open), name
        assert entry.source in ("keras", "onnx", "engine")
        assert entry.reference is None or entry.reference in runtimes.RUNTIMES
        why = module.available(name)
        assert why is None or (isinstance(why, str) and "\n" not in why)
    with pytest.raises(ValueError, match="runtime must be one of tf, xla, onnxruntime"):
        runtimes.entry("tvm")
    with pytest.raises(BadInput, match="precision must be one of fp32, fp16, bf16"):
        runtimes.open_runtime("onnxruntime", "x.onnx", precision="int4")


def test_precision_is_the_files_and_another_is_refused(tiny, tmp_path):
    from deploy.export import export_onnx

    half = tmp_path / "half.onnx"
    export_onnx(tiny["model"], half, precision="fp16")
    assert runtimes.open_runtime("onnxruntime", half).precision == "fp16"
    with pytest.raises(BadInput, match="float32 export .* --precision fp16"):
        runtimes.open_runtime("onnxruntime", tiny["nhwc"], precision="fp16")
    with pytest.raises(BadInput, match="bf16 is not an export's precision"):
        runtimes.open_runtime("onnxruntime", tiny["nhwc"], precision="bf16")
    # the float16 file agrees with Keras under the float16 rule, not the float32 one
    images = _images(1)
    want = np.asarray(tiny["model"].predict(images.astype(np.float32), verbose=0))
    assert check(runtimes.open_runtime("onnxruntime", half).run(images), want, "fp16").passed


def test_parity_rule_by_hand():
    reference = np.zeros((1, 2, 2, 3), np.float32)
    reference[..., 0] = 1.0
    got = reference.copy()
    got[0, 0, 0] = [0.0, 2.0, 0.0]
    parity = compare(got, reference)
    assert parity.max_abs_diff == 2.0 and parity.agreement == 0.75 and parity.logit_scale == 1.0
    parity.judge("fp32")
    assert parity.errors == ["max |logit diff| 2 > 0.001", "argmax agreement 75.000% < 99.9%"]
    assert not parity.passed
    # limits grow with the logits' scale; float16 is looser; ties are judged on agreement only
    assert limits("fp32", 300.0) == (pytest.approx(0.3), 0.999)
    assert limits("fp16", 0.5) == (pytest.approx(0.02), 0.99)
    assert limits("fp32", 5.0, jumps_at_ties=True) == (float("inf"), 0.995)
    labels = np.array([[[1, 2], [3, 4]]], np.uint8)
    same = compare(labels, labels).judge("fp32")
    assert same.max_abs_diff is None and same.agreement == 1.0 and same.passed
    with pytest.raises(ValueError, match="output shapes differ"):
        compare(reference, reference[0])


def test_segmenter_refuses_a_runtime_that_breaks_the_rule(tiny, monkeypatch):
    """A runtime checked against a reference (OpenVINO against onnxruntime) runs its first
    batch through both; an output off by 0.5 breaks the float32 rule: one BadInput line."""
    from inference.segmenter import Segmenter

    checked = [n for n in runtimes.ONNX_RUNTIMES if runtimes.entry(n).reference is not None]
    checked = [n for n in checked if runtimes.available(n) is None]
    if not checked:
        pytest.skip("no runtime with a reference runs here")
    name = checked[0]
    images = list(_images(1))
    segmenter = Segmenter("fastscnn", onnx=tiny["nhwc"], runtime=name)
    segmenter.predict(images)
    assert segmenter.parity is not None and segmenter.parity.passed
    broken = Segmenter("fastscnn", onnx=tiny["nhwc"], runtime=name)
    real_run = broken.runtime.run
    monkeypatch.setattr(broken.runtime, "run", lambda batch: real_run(batch) + 0.5)
    with pytest.raises(BadInput, match=f"differs from {runtimes.title('onnxruntime')}'s"):
        broken.predict(images)
