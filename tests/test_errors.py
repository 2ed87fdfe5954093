"""One exception for the user's mistakes: `utils.errors.BadInput` is one line `error: ...` and
exit status 2; any other exception (a bug) is a traceback and exit status 1.

The library raises BadInput only for what the user can fix, and its narrow `except` clauses turn
only the errors a library documents for a bad file into BadInput: an unexpected error inside
them stays a traceback.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from utils.cli import guard
from utils.errors import BadInput


def _raise(error: BaseException):
    """A guarded main that raises `error`."""

    @guard
    def main() -> None:
        raise error

    return main


# --------------------------------------------------------------------------- the guard


def test_bad_input_is_one_line_and_status_2(capsys):
    with pytest.raises(SystemExit) as info:
        _raise(BadInput("weights file 'x.h5' not found;\n  pass the file train.py wrote"))()
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "error: weights file 'x.h5' not found; pass the file train.py wrote\n"
    )


@pytest.mark.parametrize(
    "error", [ValueError("internal"), OSError("internal"), KeyError("internal")], ids=repr
)
def test_any_other_error_is_a_bug_and_propagates(capsys, error):
    with pytest.raises(type(error)) as info:
        _raise(error)()
    assert info.value is error
    assert "error:" not in capsys.readouterr().err


_GUARDED = """
import sys
sys.path.insert(0, {repo!r})
from utils.cli import guard
from utils.errors import BadInput

@guard
def main():
    raise {error}

main()
"""


@pytest.mark.parametrize(
    ("error", "status"),
    [("BadInput('image x.png is truncated; re-extract it')", 2), ("ValueError('internal')", 1)],
    ids=["bad-input", "bug"],
)
def test_guarded_process_exit_status(repo_root, error, status):
    code = textwrap.dedent(_GUARDED.format(repo=str(repo_root), error=error))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == status, proc.stderr
    if status == 2:
        assert proc.stderr == "error: image x.png is truncated; re-extract it\n"
    else:
        assert "Traceback" in proc.stderr and "ValueError: internal" in proc.stderr
        assert not [line for line in proc.stderr.splitlines() if line.startswith("error:")]


# --------------------------------------------------------------------------- narrow excepts


def _png(path, array) -> None:
    import imagecodecs

    path.write_bytes(imagecodecs.png_encode(array))


@pytest.mark.parametrize("cut", [0.5, 0.1])
def test_corrupt_png_is_bad_input(tmp_path, cut):
    from utils.io import read_png

    path = tmp_path / "label.png"
    _png(path, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    path.write_bytes(path.read_bytes()[: int(cut * path.stat().st_size)])
    with pytest.raises(BadInput, match="label.png"):
        read_png(path, "label")
    with pytest.raises(BadInput, match="missing.png"):
        read_png(tmp_path / "missing.png", "label")


def test_unexpected_decoder_error_is_not_bad_input(tmp_path, monkeypatch):
    import imagecodecs

    from utils.io import read_png

    path = tmp_path / "ok.png"
    _png(path, np.zeros((8, 8), np.uint8))

    def broken(data):
        raise TypeError("a bug, not a bad file")

    monkeypatch.setattr(imagecodecs, "png_decode", broken)
    with pytest.raises(TypeError, match="a bug"):
        read_png(path)


def test_onnx_file_errors(tmp_path):
    from deploy.graph import load_onnx

    with pytest.raises(BadInput, match="not found"):
        load_onnx(tmp_path / "missing.onnx")
    for name, data in [("garbage.onnx", b"\x08\xff" * 100), ("empty.onnx", b"")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadInput, match=name):
            load_onnx(tmp_path / name)


def test_keras_weights_errors_are_classified():
    import zipfile

    from models.loading import weights_unavailable

    # keras.utils.get_file re-raises a failed download as a plain Exception
    assert weights_unavailable(Exception("URL fetch failure on https://..."))
    for error in (OSError("truncated"), ValueError("mismatch"), KeyError("layers")):
        assert weights_unavailable(error)
    assert weights_unavailable(zipfile.BadZipFile("not a zip"))
    for bug in (TypeError("bug"), RuntimeError("bug"), AttributeError("bug"), IndexError("bug")):
        assert not weights_unavailable(bug)


@pytest.mark.parametrize(
    ("raised", "expected"), [(OSError("truncated file"), BadInput), (TypeError("bug"), TypeError)]
)
def test_backbone_weights_file_errors(tmp_path, monkeypatch, raised, expected):
    """A weights file Keras cannot read is bad input; a bug while reading it stays a bug."""
    import keras

    from models.backbones import mobilenetv2
    from models.backbones import resnet as resnet_module

    path = tmp_path / "backbone.h5"
    path.write_bytes(b"not HDF5")

    def failing(*args, **kwargs):
        raise raised

    monkeypatch.setattr(keras.applications, "MobileNetV2", failing)
    with pytest.raises(expected) as info:
        mobilenetv2.load_mobilenetv2_weights(None, str(path))
    assert expected is not BadInput or str(path) in str(info.value)
    monkeypatch.setitem(resnet_module.RESNETS, "resnet50", (failing, ()))
    with pytest.raises(expected):
        resnet_module._pretrained_reference("resnet50", str(path))


# --------------------------------------------------------------------------- real commands


def _corrupt_tree(synthetic_root, tmp_path):
    """A copy of the synthetic tree whose first train image is cut in half."""
    root = tmp_path / "root"
    shutil.copytree(synthetic_root, root)
    image = sorted((root / "leftImg8bit" / "train").rglob("*.png"))[0]
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    return root, image


@pytest.mark.slow
def test_cli_corrupt_png_is_one_line(run_cli, synthetic_root, tmp_path):
    root, image = _corrupt_tree(synthetic_root, tmp_path)
    proc = run_cli("-m", "datasets.cityscapes", "-p", str(root), "--split", "train", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.error_lines == [proc.stderr.strip()], proc.stderr
    assert image.name in proc.error_lines[0] and "--skip-bad" in proc.error_lines[0]


@pytest.mark.slow
def test_cli_bug_in_a_decoder_is_a_traceback(repo_root, synthetic_root, tmp_path):
    """The same command with a decoder that fails in an unexpected way: status 1, a traceback."""
    root, _ = _corrupt_tree(synthetic_root, tmp_path)
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(repo_root)!r})
        import imagecodecs

        def broken(data):
            raise RuntimeError("internal decoder bug")

        imagecodecs.png_decode = broken
        from datasets.cityscapes import main
        main(["-p", {str(root)!r}, "--split", "train"])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" in proc.stderr and "RuntimeError: internal decoder bug" in proc.stderr
    assert not [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_cli_missing_weights_is_one_line(run_cli, tmp_path):
    photo = tmp_path / "photos" / "a.png"
    photo.parent.mkdir()
    _png(photo, np.zeros((64, 128, 3), np.uint8))
    missing = tmp_path / "missing.weights.h5"
    proc = run_cli(
        "predict.py",
        *("-m", "fastscnn", "-w", str(missing), "-t", "64,128"),
        *("--input", str(photo.parent), "-r", str(tmp_path / "out")),
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.error_lines == [proc.stderr.strip()], proc.stderr
    assert str(missing) in proc.error_lines[0]
    assert "Traceback" not in proc.stderr
