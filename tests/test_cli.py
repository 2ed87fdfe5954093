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
    ("import_weights.py", "x.pth", "--no-such-option"),
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


# --------------------------------------------------------------------------- --help

#: Every command line and subcommand, as a user runs it for its --help.
HELP_COMMANDS = [
    ("train.py",),
    ("evaluate.py",),
    ("predict.py",),
    ("convert_to_onnx.py",),
    ("import_weights.py",),
    ("benchmark.py",),
    *[("benchmark.py", sub) for sub in ("models", "train", "data", "fit", "eval", "study")],
    ("-m", "datasets.synthetic"),
    ("-m", "datasets.cityscapes"),
]
#: What a --help must not import: each takes 0.5-6 s to load (TensorFlow alone about 5 s).
HEAVY_MODULES = ("tensorflow", "keras", "onnx", "tf2onnx", "onnxruntime", "openvino")
#: Python reprs that have no place in a help text.
REPRS = ("[(", "['", "(None", "None:", "True)", "False)")

#: Runs `python -c _HELP_PROBE HEAVY,MODULES COMMAND...` as `python COMMAND... --help` and
#: reports on stderr its exit code, its seconds and the heavy modules it imported.
_HELP_PROBE = """
import json, runpy, sys, time
heavy_names, target = sys.argv[1].split(","), sys.argv[2:]
sys.argv = [target[0], *target[1:], "--help"]
start = time.perf_counter()
try:
    if target[0] == "-m":
        sys.argv = [target[1], *target[2:], "--help"]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(target[0], run_name="__main__")
    code = None
except SystemExit as exc:
    code = exc.code
seconds = time.perf_counter() - start
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(heavy_names))
print(json.dumps({"code": code, "seconds": seconds, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c))
def test_help_is_instant_and_plain(repo_root, command):
    """--help in under a second, without TensorFlow or onnx, and without Python reprs."""
    import json

    proc = subprocess.run(
        [sys.executable, "-c", _HELP_PROBE, ",".join(HEAVY_MODULES), *command],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), proc.stderr
    assert report["heavy"] == [], report
    assert report["seconds"] < 1.0, report
    assert "usage:" in proc.stdout and "--help" in proc.stdout
    for text in REPRS:
        assert text not in proc.stdout, (command, text)


def _all_parsers():
    """(name, parser) of every command line, datasets.synthetic and datasets.cityscapes (whose
    parsers live inside their main) included."""
    import argparse

    from datasets import cityscapes, synthetic
    from utils import cli

    yield from _parsers()
    for module in (synthetic, cityscapes):
        made: list[argparse.ArgumentParser] = []
        original = cli.Parser.parse_args

        def capture(self, *args, made=made, **kwargs):
            made.append(self)
            raise SystemExit(0)

        cli.Parser.parse_args = capture
        try:
            with pytest.raises(SystemExit):
                module.main(["/tmp/unused"])
        finally:
            cli.Parser.parse_args = original
        yield f"-m {module.__name__}", made[0]


def test_help_shows_every_default():
    """Every option with a default (not None, not a flag that is off) says it in its help, in
    plain words."""
    import argparse

    from utils.cli import plain_value

    checked = 0
    for name, parser in _all_parsers():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.help in (None, argparse.SUPPRESS) or action.default in (
                None,
                argparse.SUPPRESS,
            ):
                continue
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                continue
            text = formatter._expand_help(action)
            assert "default" in text, (name, action.dest, text)
            if "default" not in action.help:  # the formatter's own words
                expected = f"(default: {plain_value(action.default, action.nargs)})"
                assert text.endswith(expected), (name, action.dest, text)
            for repr_text in REPRS:
                assert repr_text not in text, (name, action.dest, text)
            checked += 1
        for repr_text in REPRS:
            assert repr_text not in parser.format_help(), (name, repr_text)
    assert checked > 60  # every script was looked at


def test_plain_defaults():
    """The formatter's words for defaults, against hand-written expectations (0 shown)."""
    from utils.cli import make_parser, plain_value

    assert plain_value((1024, 2048)) == "1024,2048"
    assert plain_value([(1024, 2048)], "+") == "1024,2048"
    assert plain_value([(1024, 2048), (512, 1024)], "+") == "1024,2048 512,1024"
    assert plain_value(["onnxruntime", "openvino"]) == "onnxruntime,openvino"
    assert plain_value(["fastscnn", "unet"], "+") == "fastscnn unet"
    assert [plain_value(v) for v in (0, 0.0, 420.0, 0.2, 1e-6)] == ["0", "0", "420", "0.2", "1e-06"]
    assert plain_value([]) == "none"

    parser = make_parser("test")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--rate", type=float, default=0.0, help="a rate")
    parser.add_argument("--size", default=(1024, 2048), help="image size H,W")
    parser.add_argument("--sizes", nargs="+", default=[(512, 1024)], help="sizes")
    parser.add_argument("--kind", choices=("a", "b"), metavar="K", default="a", help="a kind")
    parser.add_argument("--flag", action="store_true", help="a flag")
    text = " ".join(parser.format_help().split())
    assert "random seed (default: 0)" in text
    assert "a rate (default: 0)" in text
    assert "image size H,W (default: 1024,2048)" in text
    assert "sizes (default: 512,1024)" in text
    assert "a kind (one of: a, b) (default: a)" in text
    assert "a flag --" not in text and "a flag (default" not in text


def test_only_the_options_a_command_uses():
    """-c/--coarse (coarse annotations for the training split) only where a training split is
    read; the rest still see args.coarse as False."""
    import predict
    import train

    def options(parser):
        return {s for action in parser._actions for s in action.option_strings}

    assert "--coarse" in options(train.build_parser())
    assert "--coarse" not in options(predict.build_parser())
    assert predict.build_parser().parse_args(["-m", "fastscnn"]).coarse is False
    subcommands = {name: parser for name, parser in _parsers() if name.startswith("benchmark")}
    assert "--coarse" not in options(subcommands["benchmark.py eval"])


def test_model_option_choices_match_the_builders():
    """The --backbone and --variant values offered are the builders' own, default first."""
    import inspect

    from models import ddrnet, deeplabv3plus, fastfcn, get_info, hrnet_ocr, pidnet, segformer
    from models.backbones import resnet
    from models.options import BACKBONES, VARIANTS

    def default(builder):
        return inspect.signature(builder).parameters["backbone"].default

    assert set(BACKBONES["deeplabv3+"]) == set(deeplabv3plus.BACKBONES)
    assert BACKBONES["deeplabv3+"][0] == default(deeplabv3plus.build_deeplabv3plus)
    assert set(BACKBONES["fastfcn"]) == set(resnet.RESNETS)
    assert BACKBONES["fastfcn"][0] == default(fastfcn.build_fastfcn)
    assert set(BACKBONES["hrnet_ocr"]) == set(hrnet_ocr.BACKBONE_WIDTHS)
    assert hrnet_ocr.BACKBONE_WIDTHS[BACKBONES["hrnet_ocr"][0]] == 48  # the builder's default
    for name, module in (("pidnet", pidnet), ("ddrnet", ddrnet), ("segformer", segformer)):
        assert tuple(module.VARIANTS) == VARIANTS[name]
        assert get_info(name).default_variant == VARIANTS[name][0]
