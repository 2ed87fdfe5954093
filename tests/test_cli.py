"""What every command line shares: a usage error is one line `error: ...` with exit status 2."""

from __future__ import annotations

import pytest

COMMANDS = [
    ("train.py", "-m", "fastscnn", "--no-such-option"),
    ("predict.py", "-m", "fastscnn", "--no-such-option"),
    ("evaluate.py", "--no-such-option"),
    ("convert_to_onnx.py", "-m", "fastscnn", "--no-such-option"),
    ("benchmark.py", "--no-such-option"),
    ("benchmark.py", "models", "--no-such-option"),
    ("benchmark.py", "eval", "--no-such-option"),
    ("-m", "datasets.cityscapes", "--no-such-option"),
    ("-m", "datasets.synthetic", "/tmp/unused", "--no-such-option"),
]


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_usage_error_is_one_line(run_cli, command):
    proc = run_cli(*command, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.error_lines == [proc.stderr.strip()], proc.stderr
    assert "--no-such-option" in proc.error_lines[0]
    assert "usage:" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [("-m", "nope", "-t", "64,128"), ("--model", "nope")],
    ids=["convert_to_onnx", "predict"],
)
def test_unknown_model_names_the_choices(run_cli, command):
    script = "convert_to_onnx.py" if "-t" in command else "predict.py"
    proc = run_cli(script, *command, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.error_lines) == 1 and "fastscnn" in proc.error_lines[0], proc.stderr
