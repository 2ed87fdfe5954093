"""Running a model on images: the segmenter over Keras, onnxruntime, OpenVINO and TensorRT."""
