"""Import a published Cityscapes checkpoint into the suite's model: a .weights.h5 that every
command uses as it is.

Reads mmsegmentation's checkpoints of PIDNet (S, M, L), DDRNet (23-slim, 23) and OCRNet on
HRNetV2 (W18-Small, W48) (`.pth`, with or without `state_dict`), recognises the model and variant from the tensors' names and
shapes, converts each tensor to its Keras layer (OIHW kernels to HWIO, PAPPM's grouped
convolution split per branch, the training-only heads left out) and writes OUT.weights.h5,
which records the model, its options, the class set, the source file's name and SHA-256 and
the published mIoU, so predict.py, evaluate.py and convert_to_onnx.py build the right variant
from it. The tests prove, against mmsegmentation itself, that the imported model computes what
the checkpoint's model computes (tests/test_import_weights.py).

A .pth file is a pickle: it is read by torch.load in its weights-only mode, which refuses
anything but tensors and plain data; such a file is refused with one line and nothing is
written. Reading .pth needs torch: pip install -r requirements-import.txt.

Examples:
  python import_weights.py pidnet-s_2xb6-120k_1024x1024-cityscapes_20230302_191700-bb8e3bcc.pth
  python import_weights.py ddrnet_23-slim_cityscapes.pth -m ddrnet -o weights/ddrnet_slim.weights.h5
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from utils.cli import guard, make_parser, quiet_tensorflow
from utils.errors import BadInput


def build_parser() -> argparse.ArgumentParser:
    """The import_weights.py argument parser."""
    parser = make_parser(__doc__)
    parser.add_argument("checkpoint", help="the downloaded checkpoint (.pth)")
    parser.add_argument(
        "-m",
        "--model",
        default=None,
        help="the model the checkpoint should hold (default: recognised from the file; a file "
        "that holds another is refused)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        help="the .weights.h5 to write (default: runs/weights/MODEL_VARIANT.weights.h5)",
    )
    return parser


@guard
def main(argv: Sequence[str] | None = None) -> int:
    """Import, write the weights file atomically, print what was done."""
    args = build_parser().parse_args(argv)
    if args.output is not None and not str(args.output).endswith(".weights.h5"):
        raise BadInput(f"output {args.output!r} must end in .weights.h5 (Keras' weights file)")
    quiet_tensorflow()
    # after parsing: keeps --help and usage errors instant
    from models.published import import_checkpoint, record_import
    from utils.io import atomic_path, check_writable_dir
    from utils.labels import DEFAULT_CLASS_SET, record_class_set

    if args.output is not None:
        check_writable_dir(Path(args.output).parent)
    imported = import_checkpoint(args.checkpoint, args.model)
    variant = imported.options.get("variant")
    default = Path("runs/weights") / f"{imported.name}_{variant}.weights.h5"
    output = Path(args.output) if args.output else default
    check_writable_dir(output.parent)
    with atomic_path(output, suffix=".weights.h5") as tmp:
        imported.model.save_weights(str(tmp))
        record_import(tmp, imported)
        record_class_set(tmp, DEFAULT_CLASS_SET)
    miou = imported.published_miou
    miou = "" if miou is None else f", published val mIoU {miou}"
    print(
        f"{imported.source} ({imported.sha256[:12]}): {imported.name} {imported.options}, "
        f"{imported.layers} layers{miou} -> {output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
