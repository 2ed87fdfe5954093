"""The dataset options every data-reading script takes on its command line, and the root they name."""

from __future__ import annotations

import argparse

from datasets.cityscapes import resolve_root


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


def dataset_root(
    args: argparse.Namespace,
    num_synthetic: int = 20,
    synthetic_size: tuple[int, int] = (1024, 2048),
) -> str:
    """The dataset root from --path, CITYSCAPES_DATASET or --synthetic; ValueError if none."""
    return str(
        resolve_root(
            args.path,
            synthetic=args.synthetic,
            num_synthetic=num_synthetic,
            synthetic_size=synthetic_size,
        )
    )
