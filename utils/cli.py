"""Argparse helpers shared by the command-line scripts, and the one way they report bad input."""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import tempfile
from collections.abc import Callable
from typing import Any, NoReturn

EXIT_BAD_INPUT = 2


def fail(message: str) -> NoReturn:
    """Print `error: message` on one line to stderr and exit with status 2."""
    message = " ".join(str(message).split())
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


def guard(main: Callable[..., Any]) -> Callable[..., Any]:
    """Run a CLI `main`, turning ValueError and OSError raised for bad input into `fail`.

    Library code raises ValueError (bad value) or OSError (missing or unwritable file) with a
    message that names the value or path and the fix; this wrapper prints it as one line.
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except (ValueError, OSError) as exc:
            fail(str(exc) or repr(exc))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper


def parse_target_size(text: str) -> tuple[int, int]:
    """Parse `H,W` or `H,W,C` (the seed's form) into (H, W); C, when given, must be 3."""
    parts = [p.strip() for p in str(text).replace("x", ",").split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"target size must be H,W or H,W,C with positive integers, e.g. 1024,2048; got {text!r}"
        )
    if len(values) == 3 and values[2] != 3:
        raise argparse.ArgumentTypeError(f"images have 3 channels; got C={values[2]} in {text!r}")
    return values[0], values[1]


def positive_int(text: str) -> int:
    """Argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """Argparse type: a float of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (unless the help says it already, or it is None/False) and
    keeps the description's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def make_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser whose usage errors exit with status 2 and whose help shows defaults."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    """-p/--path, --synthetic and -c/--coarse, as every dataset-reading script takes them."""
    group = parser.add_argument_group("dataset")
    group.add_argument(
        "-p",
        "--path",
        default=None,
        help="Cityscapes root holding leftImg8bit/ and gtFine/ "
        "(default: the CITYSCAPES_DATASET environment variable)",
    )
    group.add_argument(
        "--synthetic",
        action="store_true",
        help="use a generated Cityscapes-format tree in the cache folder "
        "instead of the real data set (no download needed)",
    )
    group.add_argument(
        "-c",
        "--coarse",
        action="store_true",
        help="add the coarse annotations (gtCoarse, leftImg8bit/train_extra) to the training split",
    )
    group.add_argument(
        "--skip-bad", action="store_true", help="log and skip unreadable files instead of stopping"
    )


def add_model_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """-m/--model, --backbone, --output-stride, --head, -t/--target-size: what build_model needs."""
    quiet_tensorflow()
    from models import MODELS  # imported here so `--help` of TF-free scripts stays light

    group = parser.add_argument_group("model")
    group.add_argument(
        "-m", "--model", required=required, choices=sorted(MODELS), help="model to build"
    )
    group.add_argument(
        "--backbone",
        default=None,
        help="backbone for models that have a choice: deeplabv3+ "
        "{mobilenetv2, xception}, fastfcn {resnet50, resnet101}, "
        "hrnet_ocr {w48, w18} (default: the model's own)",
    )
    group.add_argument(
        "--output-stride",
        type=int,
        default=None,
        choices=[8, 16],
        help="deeplabv3+ output stride (default: the model's own)",
    )
    group.add_argument(
        "--head",
        default=None,
        choices=["encnet", "psp", "aspp"],
        help="fastfcn segmentation head (default: encnet, the paper's)",
    )
    group.add_argument(
        "-t",
        "--target-size",
        type=parse_target_size,
        default=None,
        help="input size H,W or H,W,C (default: the model's recipe crop "
        "for training, 1024,2048 for inference)",
    )


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The build_model keyword options given on the command line (None ones are left out)."""
    options = {
        "backbone": getattr(args, "backbone", None),
        "output_stride": getattr(args, "output_stride", None),
        "head": getattr(args, "head", None),
    }
    return {k: v for k, v in options.items() if v is not None}


def dataset_root(
    args: argparse.Namespace,
    num_synthetic: int = 20,
    synthetic_size: tuple[int, int] = (1024, 2048),
) -> str:
    """The dataset root from --path, CITYSCAPES_DATASET or --synthetic; ValueError if none."""
    from datasets.cityscapes import resolve_root

    return str(
        resolve_root(
            args.path,
            synthetic=args.synthetic,
            num_synthetic=num_synthetic,
            synthetic_size=synthetic_size,
        )
    )


#: Start-up lines TensorFlow 2.21 writes to stderr from C++ before its logging is configured
#: (TF_CPP_MIN_LOG_LEVEL does not reach them): oneDNN and CUDA-stub notices on CPU machines.
_TF_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called|"
    r"[IW]\d{4} .*(port\.cc|cudart_stub\.cc|cpu_feature_guard\.cc)|"
    r"E\d{4} .*cuda_platform\.cc:\d+\] failed call to cuInit|"
    r"To enable the following instructions:)"
)
_tensorflow_ready = False


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up chatter filtered out of stderr.

    The known notices (oneDNN on, no CUDA driver, CPU instruction sets) are dropped so that a
    CLI's `error: ...` line stands alone; anything else TensorFlow says is passed through.
    """
    global _tensorflow_ready
    if _tensorflow_ready:
        return
    _tensorflow_ready = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # CUDA initialisation logs here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode(errors="replace")
    kept = [line for line in text.splitlines() if line.strip() and not _TF_STARTUP_NOISE.match(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
