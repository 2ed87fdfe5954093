"""The export settings a command line offers, without onnx, tf2onnx or TensorFlow (so the
`--help` of convert_to_onnx.py stays instant); deploy.graph and deploy.export use them."""

from __future__ import annotations

#: Opset used when none is given: parsed by TensorRT 8.5 and newer (JetPack 5.1+).
DEFAULT_OPSET = 17
#: Oldest opset this exporter writes: Resize needs opset 11 for half-pixel modes, and 13 is the
#: oldest that TensorRT 8.x's parser documents fully (JetPack 4.6 ships TensorRT 8.2, opset 13).
MIN_OPSET = 13
