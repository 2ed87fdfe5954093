"""Names train.py's options choose from, without TensorFlow (so `--help` stays instant)."""

from __future__ import annotations

#: Optimizer names accepted by --optimizer and -f (the seed's list, and adamw: Adam with
#: decoupled weight decay, SegFormer's optimizer).
OPTIMIZERS = (
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "ftrl",
    "nadam",
    "rmsprop",
    "sgd",
    "sgd_nesterov",
)
#: Optimizers that take a momentum (--momentum applies to them only).
MOMENTUM_OPTIMIZERS = ("sgd", "sgd_nesterov", "rmsprop")
