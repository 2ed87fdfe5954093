"""`--classes`, as train.py, evaluate.py and predict.py take it, without importing the label table.

The names are those of `utils.labels.CLASS_SETS` (a test checks that they agree); keeping them
here leaves numpy and cityscapesscripts out of `--help`.
"""

from __future__ import annotations

import argparse

#: The keys of utils.labels.CLASS_SETS, in its order.
CLASS_SET_NAMES = ("cityscapes19", "categories", "rail20")


def add_classes_arg(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str, default: str | None = None
) -> None:
    """Add `--classes {cityscapes19,categories,rail20}`; `what` ends the help. `default` None
    (the default) leaves the choice to the command: the class set its model records, else
    cityscapes19; a name is shown in the help as the default."""
    parser.add_argument(
        "--classes",
        choices=CLASS_SET_NAMES,
        default=default,
        help="class set: cityscapes19 (the benchmark's 19 classes), categories (its 7 "
        "categories) or rail20 (the 19 classes and rail track, label id 10); " + what,
    )
