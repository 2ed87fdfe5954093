"""The dataset options every data-reading script takes on its command line, and the root they name."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from datasets.corruptions import SEVERITIES  # light: numpy and albumentations on first use
from utils.errors import BadInput

#: The folders a Cityscapes root holds (what `resolve_root` checks by default).
ROOT_FOLDERS = ("leftImg8bit", "gtFine")


def add_dataset_args(
    parser: argparse.ArgumentParser,
    coarse: bool = False,
    skip_bad: bool = True,
    path_help: str = "Cityscapes root holding leftImg8bit/ and gtFine/",
) -> None:
    """-p/--path and --synthetic, as every dataset-reading script takes them; -c/--coarse (the
    scripts that read the training split: `coarse=True`) and --skip-bad for the scripts they
    apply to. `path_help` says what the root must hold. Without -c, `args.coarse` is False."""
    group = parser.add_argument_group("dataset")
    group.add_argument(
        "-p",
        "--path",
        default=None,
        help=f"{path_help} (default: the CITYSCAPES_DATASET environment variable)",
    )
    group.add_argument(
        "--synthetic",
        action="store_true",
        help="use a generated Cityscapes-format tree in the cache folder "
        "instead of the real data set (no download needed)",
    )
    if not coarse:
        parser.set_defaults(coarse=False)  # what callers read; the option is not offered
    else:
        group.add_argument(
            "-c",
            "--coarse",
            action="store_true",
            help="add the coarse annotations (gtCoarse, leftImg8bit/train_extra) "
            "to the training split",
        )
    if skip_bad:
        group.add_argument(
            "--skip-bad",
            action="store_true",
            help="log and skip unreadable files instead of stopping",
        )


def parse_severities(text: str) -> tuple[int, ...]:
    """Argparse type of --severities (evaluate.py, benchmark.py study): distinct numbers 1-5
    separated by commas, e.g. 1,3,5; returned in increasing order."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v not in SEVERITIES for v in values) or len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(
            f"expected distinct severities 1-5 separated by commas (e.g. 1,3,5), got {text!r}"
        )
    return tuple(sorted(values))


def dataset_root(
    args: argparse.Namespace,
    num_synthetic: int = 20,
    synthetic_size: tuple[int, int] = (1024, 2048),
    require: Sequence[str] = ROOT_FOLDERS,
    why: str = "",
) -> str:
    """The dataset root from --path, CITYSCAPES_DATASET or --synthetic; BadInput if none
    (`require`, `why`: see `resolve_root`)."""
    return str(
        resolve_root(
            args.path,
            synthetic=args.synthetic,
            num_synthetic=num_synthetic,
            synthetic_size=synthetic_size,
            require=require,
            why=why,
        )
    )


def resolve_root(
    path: str | os.PathLike | None = None,
    synthetic: bool = False,
    num_synthetic: int = 20,
    synthetic_size: Sequence[int] = (1024, 2048),
    require: Sequence[str] = ROOT_FOLDERS,
    why: str = "",
) -> Path:
    """The dataset root: `path`, else $CITYSCAPES_DATASET, else (with `synthetic`) a generated tree.

    Args:
        require: the folders the root must hold (default both; scoring prediction PNGs needs
            only ``gtFine``, as the official script does).
        why: added to the message about a missing folder (what needs it).

    Raises BadInput when neither is given (naming both and --synthetic) and when the root lacks
    a folder of `require`.
    """
    if synthetic:
        # Here, not at the top: the generator's numpy and OpenCV stay out of every --help.
        from datasets.synthetic import ensure_synthetic_tree

        return ensure_synthetic_tree(num=num_synthetic, size=synthetic_size)
    if path is None:
        path = os.environ.get("CITYSCAPES_DATASET") or None
    if path is None:
        raise BadInput(
            "no dataset given: pass -p/--path CITYSCAPES_ROOT or set the "
            "CITYSCAPES_DATASET environment variable (or use --synthetic for "
            "generated data that needs no download)"
        )
    root = Path(path).expanduser()
    holds = " and ".join(f"{d}/" for d in require)
    if not root.is_dir():
        raise BadInput(
            f"dataset root {str(root)!r} does not exist; pass the folder that holds {holds}"
        )
    missing = [d for d in require if not (root / d).is_dir()]
    if missing:
        raise BadInput(
            f"dataset root {str(root)!r} has no {' or '.join(missing)} folder"
            f"{f' ({why})' if why else ''}; pass the Cityscapes root that holds {holds}"
        )
    return root
