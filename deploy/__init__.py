"""Deployment: ONNX export, graph rewrites, parity and TensorRT-construct checks, TensorRT."""
