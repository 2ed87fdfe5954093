"""Names train.py's options choose from, without TensorFlow (so `--help` stays instant)."""

from __future__ import annotations

#: Optimizer names accepted by --optimizer and -f (the seed's list).
OPTIMIZERS = (
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "ftrl",
    "nadam",
    "rmsprop",
    "sgd",
    "sgd_nesterov",
)
#: Optimizers that take a momentum (--momentum applies to them only).
MOMENTUM_OPTIMIZERS = ("sgd", "sgd_nesterov", "rmsprop")
