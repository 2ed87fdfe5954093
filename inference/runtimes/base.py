"""The protocol every runtime implements, and what they share: NHWC in, NHWC out.

A runtime module has `available(name) -> str | None` (why it cannot run here) and
`open(name, source, threads, precision, **options) -> Runtime`. A `Runtime` knows its model's
input (size, fixed batch, layout), its metadata, what executed it and its version, and runs
batches two ways: `run(images)` for results (any number of images, split into the model's
fixed batch) and `bind(images)` for timing (a call on input already in place, what the timing
loop times).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import numpy as np

from utils.errors import BadInput


def nhwc_batch(images: np.ndarray) -> np.ndarray:
    """`images` as an (N, H, W, 3) batch (one (H, W, 3) image gets a batch axis); BadInput
    for any other shape."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise BadInput(f"images must be (N, H, W, 3) RGB; got shape {images.shape!r}")
    return images


class Runtime(abc.ABC):
    """A model opened by one runtime. Subclasses set the attributes in `__init__` and implement
    the abstract `_bind` and `ran_on`.

    Attributes:
        name: the registry name (tf, xla, onnxruntime, openvino, tensorrt).
        precision: what it computes in (one of inference.runtimes.PRECISIONS).
        path: the file opened ("" for a Keras model).
        metadata: the exporter's metadata of an ONNX file (model, layout, input_size, classes,
            precision, output); empty for a Keras model.
        input_shape: the model's NHWC input shape, None for a dynamic dimension.
        nchw: whether the model's tensors are NCHW (run and bind still take NHWC images).
        output_channels: classes of the output (None: label ids, or not fixed).
        version: the runtime's version.
        threads: the intra-op threads it runs with (None where it does not say).
    """

    name: str = ""
    precision: str = "fp32"
    path: str = ""
    metadata: dict[str, str]
    input_shape: list[int | None]
    nchw: bool = False
    output_channels: int | None = None
    version: str = ""
    threads: int | None = None

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) of a fixed-size model, else None."""
        height, width = self.input_shape[1:3]
        return (height, width) if height and width else None

    @property
    def batch(self) -> int | None:
        """The fixed batch size, or None when any batch goes."""
        return self.input_shape[0] or None

    @abc.abstractmethod
    def ran_on(self) -> list[str]:
        """What actually executes the model (providers, devices), as the runtime reports it."""

    def describe(self) -> dict[str, Any]:
        """What ran: runtime, version, devices, threads, precision (for rows and logs)."""
        return {
            "runtime": self.name,
            "runtime_version": self.version,
            "providers": self.ran_on(),
            "threads": self.threads,
            "precision": self.precision,
        }

    def _feed(self, images: np.ndarray) -> np.ndarray:
        """NHWC images as the model takes them: float32, transposed for an NCHW model, the size
        and batch checked."""
        feed = nhwc_batch(images).astype(np.float32, copy=False)
        expected = self.input_shape
        if any(e and e != g for e, g in zip(expected[1:3], feed.shape[1:3], strict=True)):
            shown = ["?" if e is None else e for e in expected]
            raise BadInput(
                f"the model takes {shown} NHWC images; got {list(feed.shape)} (resize the "
                "images, or export at this size with convert_to_onnx.py -t H,W)"
            )
        if self.nchw:
            feed = feed.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(feed)

    @abc.abstractmethod
    def _bind(self, feed: np.ndarray) -> Callable[[], Any]:
        """A call that runs the model on `feed` (the model's layout, one whole batch) and
        returns its first output as the model gives it."""

    def bind(self, images: np.ndarray) -> Callable[[], Any]:
        """A call that runs the model on `images` (one batch, NHWC) put in place now: what the
        timing loop times (no conversion inside; a TensorRT call returns the seconds of its
        copy in, compute and copy out)."""
        feed = self._feed(images)
        if self.batch is not None and len(feed) != self.batch:
            raise BadInput(f"the model takes batches of {self.batch} images; got {len(feed)}")
        return self._bind(feed)

    def run(self, images: np.ndarray) -> np.ndarray:
        """Run NHWC RGB images in [0, 255] (uint8 or float); NHWC float32 logits, or (N, H, W)
        uint8 label ids for an ``--argmax`` export. A fixed-batch model takes them in whole
        batches (BadInput otherwise)."""
        feed = self._feed(images)
        step = self.batch or len(feed)
        if len(feed) % step:
            raise BadInput(
                f"the model takes batches of {step} images; got {len(feed)} (feed whole "
                "batches, or export with convert_to_onnx.py --dynamic-batch)"
            )
        parts = [self._output(feed[i : i + step]) for i in range(0, len(feed), step)]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if self.nchw and out.ndim == 4:
            out = out.transpose(0, 2, 3, 1)
        return out

    def _output(self, feed: np.ndarray) -> np.ndarray:
        """The first output for one whole batch `feed` (the model's layout)."""
        return np.asarray(self._bind(feed)())
