"""The model options every model-building script takes on its command line, and their values.

Imports no Keras, so a script's `--help` and its usage errors stay instant; the registry test
checks that MODEL_NAMES names exactly the registered models.
"""

from __future__ import annotations

import argparse
from typing import Any

from utils.cli import parse_target_size

#: The names of `models.MODELS`, for argparse choices without importing Keras.
MODEL_NAMES = (
    "bayes_segnet",
    "bisenetv2",
    "ddrnet",
    "deeplabv3+",
    "fastfcn",
    "fastscnn",
    "hrnet_ocr",
    "pidnet",
    "segformer",
    "separable_unet",
    "unet",
)


#: --backbone values of the models that have a choice, each model's own first (the test of the
#: registry checks them against the builders).
BACKBONES = {
    "deeplabv3+": ("mobilenetv2", "xception"),
    "fastfcn": ("resnet50", "resnet101"),
    "hrnet_ocr": ("w48", "w18"),
}
#: --variant values of the models that have several, each model's own first.
VARIANTS = {
    "pidnet": ("s", "m", "l"),
    "ddrnet": ("23-slim", "23"),
    "segformer": ("b0", "b1", "b2", "b3", "b4", "b5"),
}


def _per_model(values: dict[str, tuple[str, ...]]) -> str:
    """'deeplabv3+ mobilenetv2 or xception, fastfcn ...': the values of each model, in words."""
    return ", ".join(
        f"{model} {', '.join(names[:-1])} or {names[-1]}" for model, names in values.items()
    )


def add_model_args(
    parser: argparse.ArgumentParser, required: bool = True, target_size_help: str | None = None
) -> None:
    """-m/--model, --backbone, --variant, --output-stride, --head, -t/--target-size: build_model's.

    `target_size_help` replaces the help of -t for a script whose default size is its own.
    """
    group = parser.add_argument_group("model")
    group.add_argument(
        "-m",
        "--model",
        required=required,
        choices=MODEL_NAMES,
        metavar="MODEL",
        help="model to build: %(choices)s",
    )
    group.add_argument(
        "--backbone",
        default=None,
        type=str.lower,
        choices=sorted({name for names in BACKBONES.values() for name in names}),
        metavar="NAME",
        help=f"backbone of the models that have a choice: {_per_model(BACKBONES)} "
        "(default: the first named, each model's own)",
    )
    group.add_argument(
        "--variant",
        default=None,
        metavar="NAME",
        help=f"variant of the models that have several: {_per_model(VARIANTS)} "
        "(default: the first named, each model's own)",
    )
    group.add_argument(
        "--output-stride",
        type=int,
        default=None,
        choices=[8, 16],
        help="deeplabv3+ output stride (default: 16; the paper trains at 16 and evaluates at 8)",
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
        metavar="H,W",
        help=target_size_help
        or "input size H,W or H,W,C (default: the model's recipe crop "
        "for training, 1024,2048 for inference)",
    )


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The build_model keyword options given on the command line (None ones are left out)."""
    options = {
        "backbone": getattr(args, "backbone", None),
        "variant": getattr(args, "variant", None),
        "output_stride": getattr(args, "output_stride", None),
        "head": getattr(args, "head", None),
    }
    return {k: v for k, v in options.items() if v is not None}
