"""What every command line shares: a usage error is one line `error: ...` with exit status 2."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time

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


def _parsers():
    """(name, parser) of every command line, each benchmark.py subcommand included."""
    import argparse

    import benchmark
    import convert_to_onnx
    import evaluate
    import predict
    import train

    pending = [
        (f"{module.__name__}.py", module.build_parser())
        for module in (benchmark, convert_to_onnx, evaluate, predict, train)
    ]
    while pending:
        name, parser = pending.pop()
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += [(f"{name} {sub}", p) for sub, p in action.choices.items()]


def test_no_default_writes_under_results():
    """No option of any command defaults to a path under the committed results/ folder."""
    from pathlib import PurePath

    outputs = {}
    for name, parser in _parsers():
        for action in parser._actions:
            default = action.default
            if isinstance(default, str) and default:
                assert PurePath(default).parts[0] != "results", (name, action.dest, default)
            if action.dest in ("output_dir", "results_path") and isinstance(default, str):
                outputs[name] = default
    assert outputs["benchmark.py"] == "runs/benchmark"
    assert outputs["evaluate.py"] == "runs/evaluation"
    assert outputs["predict.py"] == "runs/predictions"


class _Terminal(io.StringIO):
    """A captured stream that says it is a terminal (where a live progress bar can redraw)."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "log"])
def test_interrupted_line_stands_alone(terminal, monkeypatch):
    from utils.cli import guard

    stdout, stderr = (_Terminal(), _Terminal()) if terminal else (io.StringIO(), io.StringIO())
    stdout.write("train 3/10 [=====>....")  # a progress bar's line, cursor at its end
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)

    @guard(on_interrupt="rerun the same command to continue")
    def main() -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 130
    expected = "interrupted: rerun the same command to continue\n"
    assert stderr.getvalue() == ("\n" + expected if terminal else expected)


class _Dropped:
    """What Keras' weakref callbacks do to a Ctrl-C that arrives while they run: swallow it."""

    def __del__(self) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_lost_in_a_callback_still_stops(capsys):
    from utils.cli import guard

    @guard
    def main() -> str:
        _Dropped()  # Python can only print "Exception ignored in ..." for its KeyboardInterrupt
        for _ in range(200):
            time.sleep(0.01)
        return "finished"

    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.splitlines() == ["interrupted"]


@pytest.mark.slow
def test_ctrl_c_says_what_a_rerun_does(repo_root, tmp_path):
    """SIGINT in the middle of a command: exit 130, the last line of stderr says what is kept."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(repo_root / "benchmark.py"),
            "models",
            "--params",
            "--output-dir",
            str(out),
        ],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not out.exists():  # the command is running: TensorFlow loaded, models building
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)  # once: the first Ctrl-C must stop it
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: no result file was written"), stderr
    assert "rerun" in last
    assert not list(out.iterdir())  # as the message says
