"""import_weights.py against the reference implementation (mmsegmentation 1.2.2 in PyTorch).

The reference environment (.venv-ref, requirements-reference.txt; .ci/run makes it) builds each
mmsegmentation Cityscapes model with random weights and randomised batch-norm statistics,
saves it as mmsegmentation saves checkpoints and runs its own inference on an image
(tests/reference/make_reference.py). The test imports the checkpoint and compares our logits
on the same image: max |difference| <= 1e-4 of the logits' scale and argmax agreement
>= 99.99%. Keras' one-sided 'same' padding of strided convolutions gives PIDNet-S logits 0.69
of their scale off (48% agreement): the tolerance is far below that.

Without .venv-ref these tests are skipped with the reason (SEGBENCH_REQUIRE_REFERENCE=1, which
CI sets, makes that a failure).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.parity import compare
from utils.errors import BadInput

REPO = Path(__file__).resolve().parent.parent
REFERENCE_PYTHON = REPO / ".venv-ref" / "bin" / "python"
#: mmsegmentation model -> (our model, options) it must be recognised as.
MODELS = {
    "pidnet-s": ("pidnet", {"variant": "s"}),
    "pidnet-m": ("pidnet", {"variant": "m"}),
    "pidnet-l": ("pidnet", {"variant": "l"}),
    "ddrnet-23-slim": ("ddrnet", {"variant": "23-slim"}),
    "ddrnet-23": ("ddrnet", {"variant": "23"}),
    "hrnet-w18-small-ocr": ("hrnet_ocr", {"backbone": "w18"}),
    "hrnet-w48-ocr": ("hrnet_ocr", {"backbone": "w48"}),
}
SIZE = (128, 256)

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Every model's checkpoint and reference outputs, made by mmsegmentation in .venv-ref."""
    if not REFERENCE_PYTHON.exists():
        reason = (
            f"no reference environment at {REFERENCE_PYTHON.parent.parent} (python3 -m venv "
            ".venv-ref && .venv-ref/bin/pip install -r requirements-reference.txt)"
        )
        if os.environ.get("SEGBENCH_REQUIRE_REFERENCE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("reference")
    for name in MODELS:
        subprocess.run(
            [str(REFERENCE_PYTHON), str(REPO / "tests" / "reference" / "make_reference.py"),
             name, str(out), "--size", f"{SIZE[0]},{SIZE[1]}"],
            check=True, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    return out


def _assert_equivalent(got: np.ndarray, want: np.ndarray) -> None:
    parity = compare(got, want)
    assert parity.max_abs_diff <= 1e-4 * max(1.0, parity.logit_scale), parity
    assert parity.agreement >= 0.9999, parity


@pytest.mark.parametrize("name", sorted(MODELS))
def test_imported_checkpoint_computes_what_mmsegmentation_computes(name, references):
    from models import build_model
    from models.published import import_checkpoint

    imported = import_checkpoint(references / f"{name}.pth")
    assert (imported.name, imported.options) == MODELS[name]
    io = np.load(references / f"{name}_io.npz")
    model = build_model(imported.name, (*SIZE, 3), **imported.options)
    model.set_weights(imported.model.get_weights())
    got = np.asarray(model(io["image"].astype(np.float32), training=False))
    _assert_equivalent(got, io["logits"])


def test_the_weights_file_alone_builds_the_variant(references, tmp_path, run_cli):
    """import_weights.py writes a file that records model, variant, class set and source; the
    segmenter (predict.py's and evaluate.py's) builds PIDNet-M from it without --variant, and
    its exported ONNX agrees with mmsegmentation too."""
    import h5py

    from inference.runtimes import open_runtime
    from inference.segmenter import Segmenter

    out = tmp_path / "pidnet_m.weights.h5"
    done = run_cli("import_weights.py", str(references / "pidnet-m.pth"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "pidnet {'variant': 'm'}" in done.stdout and "80.22" in done.stdout
    with h5py.File(out) as handle:
        attrs = dict(handle.attrs)
    assert attrs["model"] == "pidnet" and attrs["options"] == '{"variant": "m"}'
    assert attrs["class_set"] == "cityscapes19" and attrs["source"] == "pidnet-m.pth"
    assert len(attrs["source_sha256"]) == 64 and attrs["published_miou"] == 80.22
    io = np.load(references / "pidnet-m_io.npz")
    segmenter = Segmenter("pidnet", weights=out, input_size=SIZE)
    assert segmenter.model.name == "pidnet_m"
    _assert_equivalent(np.asarray(segmenter.runtime.run(io["image"])), io["logits"])
    with pytest.raises(BadInput, match="holds pidnet with variant=m; got variant=s"):
        Segmenter("pidnet", weights=out, input_size=SIZE, options={"variant": "s"})
    with pytest.raises(BadInput, match="not a ddrnet: give -m pidnet"):
        Segmenter("ddrnet", weights=out, input_size=SIZE)
    onnx = tmp_path / "pidnet_m.onnx"
    done = run_cli("convert_to_onnx.py", "-m", "pidnet", "-w", str(out), "-t", "128,256",
                   "-o", str(onnx))  # fmt: skip
    assert done.returncode == 0, done.stderr
    _assert_equivalent(open_runtime("onnxruntime", onnx).run(io["image"]), io["logits"])


def test_checkpoints_it_cannot_map_are_one_line(references, tmp_path, run_cli):
    import torch

    wrong = run_cli("import_weights.py", str(references / "ddrnet-23.pth"), "-m", "pidnet")
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == (
        f"error: checkpoint {str(references / 'ddrnet-23.pth')!r} holds a ddrnet "
        "({'variant': '23'}), not a pidnet: give -m ddrnet or leave -m out"
    )
    # a tensor of another shape: the layer is named
    state = torch.load(references / "pidnet-s.pth", weights_only=True)["state_dict"]
    state["backbone.stem.1.conv.weight"] = torch.zeros(32, 32, 5, 5)
    bad = tmp_path / "bad_shape.pth"
    torch.save({"state_dict": state}, bad)
    done = run_cli("import_weights.py", str(bad), "-o", str(tmp_path / "x.weights.h5"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "layer 'stem_conv2' have shapes [(5, 5, 32, 32)" in done.stderr
    # an extra tensor: named
    state = torch.load(references / "ddrnet-23-slim.pth", weights_only=True)["state_dict"]
    state["backbone.extra.weight"] = torch.zeros(3)
    extra = tmp_path / "extra.pth"
    torch.save(state, extra)  # a bare state_dict, no 'state_dict' key
    done = run_cli("import_weights.py", str(extra), "-o", str(tmp_path / "x.weights.h5"))
    assert done.returncode == 2 and "'backbone.extra.weight'" in done.stderr
    # another layout altogether
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"encoder.conv.weight": torch.zeros(1)}}, other)
    done = run_cli("import_weights.py", str(other))
    assert done.returncode == 2 and "the first key is 'encoder.conv.weight'" in done.stderr
    assert not list(tmp_path.glob("*.weights.h5")) and not list(tmp_path.glob(".*tmp*"))


class _Payload:
    """Unpickling this runs a command that writes a file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, run_cli):
    """A .pth is a pickle; one whose unpickling would write a file is refused with one line,
    nothing is run and nothing is written."""
    torch = pytest.importorskip("torch")
    target = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": _Payload(target)}, crafted)
    out = tmp_path / "out.weights.h5"
    done = run_cli("import_weights.py", str(crafted), "-o", str(out))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: checkpoint {str(crafted)!r} holds")
    assert "refused, nothing was loaded" in lines[0] and "system" in lines[0]
    assert not target.exists() and not out.exists()
    # the same file loaded without weights_only would have run it: the test can tell
    torch.load(crafted, weights_only=False)
    assert target.exists()


def test_missing_torch_and_missing_file_are_one_line(tmp_path, monkeypatch):
    from models.published import read_checkpoint

    with pytest.raises(BadInput, match="not found; give the downloaded file"):
        read_checkpoint(tmp_path / "missing.pth")
    path = tmp_path / "m.pth"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(BadInput, match="needs torch; pip install -r requirements-import.txt"):
        read_checkpoint(path)


#: One model of each imported family, checked at Cityscapes' full size through predict.py.
FULL_SIZE_MODELS = ("pidnet-s", "ddrnet-23-slim", "hrnet-w18-small-ocr")


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL_SIZE_MODELS)
def test_predict_at_full_resolution_gives_mmsegmentations_labels(name, references, tmp_path,
                                                                  run_cli):  # fmt: skip
    """predict.py with an imported file on a 1024x2048 photo writes the label ids that
    mmsegmentation's own inference gives on the same photo (>= 99.99% of pixels)."""
    import cv2

    from utils.labels import TRAIN_ID_TO_ID

    subprocess.run(
        [str(REFERENCE_PYTHON), str(REPO / "tests" / "reference" / "make_reference.py"),
         name, str(tmp_path), "--size", "1024,2048"],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    io = np.load(tmp_path / f"{name}_io.npz")
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "frame.png"), cv2.cvtColor(io["image"][0], cv2.COLOR_RGB2BGR))
    weights = tmp_path / "imported.weights.h5"
    done = run_cli("import_weights.py", str(tmp_path / f"{name}.pth"), "-o", str(weights))
    assert done.returncode == 0, done.stderr
    model = MODELS[name][0]
    out = tmp_path / "pred"
    done = run_cli("predict.py", "-m", model, "-w", str(weights), "--input", str(photos),
                   "-t", "1024,2048", "-r", str(out), "--no-progress", timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = cv2.imread(str(out / "labelIds" / "frame_labelIds.png"), cv2.IMREAD_UNCHANGED)
    want = TRAIN_ID_TO_ID[io["pred"][0]]
    assert got.shape == want.shape == (1024, 2048)
    assert float(np.mean(got == want)) >= 0.9999
