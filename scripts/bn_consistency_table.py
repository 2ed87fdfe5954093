"""The table of results/bn_consistency.md: tests/test_bn_consistency.py's check for every model,
with and without the fix (inference- against training-mode loss after 8 steps on one batch).

Usage: .venv/bin/python scripts/bn_consistency_table.py > results/bn_consistency_table.md
"""

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import keras  # noqa: E402
from test_bn_consistency import consistent, losses  # noqa: E402

from datasets.synthetic import generate  # noqa: E402
from models.options import MODEL_NAMES  # noqa: E402

root = Path(tempfile.mkdtemp(prefix="bn_consistency_"))
generate(root, num=4, size=(128, 256), seed=1, splits=("train",))
print("| model | settings | inference-mode loss | training-mode loss | within the margin |")
print("|---|---|---|---|---|")
for name in MODEL_NAMES:
    for fix in (False, True):
        keras.utils.set_random_seed(0)
        inference, training = losses(name, root, fix)
        settings = "model's momentum + precise BN" if fix else "momentum 0.99, no precise BN"
        ok = "yes" if consistent(inference, training) else "**no**"
        print(f"| {name} | {settings} | {inference:.4f} | {training:.4f} | {ok} |", flush=True)
