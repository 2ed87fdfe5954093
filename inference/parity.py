"""The one parity rule: when two runs of the same model agree closely enough.

Every comparison of the suite uses it: an export against Keras (deploy/checks.py,
convert_to_onnx.py), OpenVINO and TensorRT against onnxruntime (the benchmark's rows, the
segmenter's first batch, convert_to_onnx.py --trt). Outputs are compared as NHWC logits (the
max absolute difference and the per-pixel argmax agreement) or, for label-id outputs, pixel by
pixel.

The limits depend on the precision and on the scale of the logits: the difference is allowed
1e-3 x max(1, max |reference logit|) in float32, since summation-order noise grows with the
logits (a randomly initialised HRNet-OCR gives logits near 300 and differences near 0.07,
2e-4 relative), with 99.9% argmax agreement; float16 rounds every stored value and activation
to ~5e-4 relative, so 2e-2 x the scale and 99%. A model whose outputs jump at pooling ties
(argmax unpooling, Bayesian SegNet: where two inputs of a pooling window are within rounding of
each other, two runtimes may pick different maxima, the unpooled value lands one pixel away and
the logits there change by O(1), whatever the precision) is judged on argmax agreement alone
(99.5%, or the precision's own minimum if lower); its difference is reported, not bounded.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

#: float32: max |logit difference| per unit of logit scale, and the least argmax agreement.
FLOAT32_MAX_DIFF = 1e-3
FLOAT32_MIN_AGREEMENT = 0.999
#: float16: the same.
FLOAT16_REL_DIFF = 2e-2
FLOAT16_MIN_AGREEMENT = 0.99
#: The least argmax agreement of a model whose outputs jump at pooling ties.
TIE_MIN_AGREEMENT = 0.995


def limits(precision: str, logit_scale: float, jumps_at_ties: bool = False) -> tuple[float, float]:
    """(max |logit difference|, min argmax agreement) allowed at `precision` (fp32 or fp16;
    the ONNX metadata's float32 and float16 are taken too) for logits of `logit_scale`."""
    half = precision in ("fp16", "float16")
    if jumps_at_ties:
        floor = FLOAT16_MIN_AGREEMENT if half else TIE_MIN_AGREEMENT
        return math.inf, min(TIE_MIN_AGREEMENT, floor)
    scale = max(1.0, float(logit_scale))
    if half:
        return FLOAT16_REL_DIFF * scale, FLOAT16_MIN_AGREEMENT
    return FLOAT32_MAX_DIFF * scale, FLOAT32_MIN_AGREEMENT


@dataclasses.dataclass
class Parity:
    """How one run's outputs compare with a reference run's on the same images, and the rule's
    verdict (`judge`)."""

    #: max |logit difference|; None for label-id outputs (nothing to subtract).
    max_abs_diff: float | None
    #: Fraction of pixels whose class (or label id) agrees.
    agreement: float
    #: max |reference logit| (the scale of the difference rule); 0 for label ids.
    logit_scale: float
    #: The limits it was judged by (None until `judge`); max_diff_allowed is inf when the
    #: difference is not bounded (outputs that jump at pooling ties).
    max_diff_allowed: float | None = None
    min_agreement: float | None = None
    #: What breaks the rule, one message each (empty: it holds, or it was not judged).
    errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def relative_diff(self) -> float | None:
        """max |logit diff| / max(1, max |reference logit|); None for label ids."""
        if self.max_abs_diff is None:
            return None
        return self.max_abs_diff / max(1.0, self.logit_scale)

    @property
    def passed(self) -> bool:
        """Whether it was judged and holds."""
        return self.min_agreement is not None and not self.errors

    def judge(self, precision: str, jumps_at_ties: bool = False) -> Parity:
        """Apply the rule at `precision`: sets the limits and `errors`; returns self."""
        self.max_diff_allowed, self.min_agreement = limits(
            precision, self.logit_scale, jumps_at_ties
        )
        self.errors = []
        if self.max_abs_diff is not None and not self.max_abs_diff <= self.max_diff_allowed:
            self.errors.append(
                f"max |logit diff| {self.max_abs_diff:.3g} > {self.max_diff_allowed:.3g}"
            )
        if self.agreement < self.min_agreement:
            self.errors.append(
                f"argmax agreement {100 * self.agreement:.3f}% < {100 * self.min_agreement:.1f}%"
            )
        return self

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return dataclasses.asdict(self)


def compare(got: np.ndarray, reference: np.ndarray) -> Parity:
    """Max logit difference and argmax agreement of `got` against `reference` (NHWC logits,
    or (N, H, W) label ids), not yet judged."""
    got, reference = np.asarray(got), np.asarray(reference)
    if got.shape != reference.shape:
        raise ValueError(
            f"output shapes differ: {got.shape} against the reference's {reference.shape}"
        )
    if got.ndim == 3:  # label ids (an --argmax export)
        return Parity(None, float(np.mean(got == reference)), 0.0)
    got32, ref32 = got.astype(np.float32), reference.astype(np.float32)
    return Parity(
        max_abs_diff=float(np.abs(got32 - ref32).max()),
        agreement=float(np.mean(got32.argmax(-1) == ref32.argmax(-1))),
        logit_scale=float(np.abs(ref32).max()),
    )


def check(
    got: np.ndarray, reference: np.ndarray, precision: str, jumps_at_ties: bool = False
) -> Parity:
    """`compare`, then `Parity.judge`: the one rule applied."""
    return compare(got, reference).judge(precision, jumps_at_ties)
