"""ResNet-50 / ResNet-101 feature extractor at output stride 32 (no dilation).

The layers are keras.applications' own ResNet50/ResNet101 layers, called directly on the model's
normalised input, so the graph is flat and the stage outputs keep their Keras names:

| feature | layer (ResNet-50 / ResNet-101)           | stride | channels |
|---------|------------------------------------------|--------|----------|
| C3      | conv3_block4_out                         | 1/8    | 512      |
| C4      | conv4_block6_out / conv4_block23_out     | 1/16   | 1024     |
| C5      | conv5_block3_out                         | 1/32   | 2048     |

Keras' ImageNet ResNet weights were trained on BGR images with the ImageNet mean subtracted
("caffe" preprocessing). The models take RGB: their first layer subtracts the mean in RGB order
(`models.layers.normalize_input(x, "caffe")`) and, when ImageNet (or other keras.applications)
weights are loaded, conv1's kernel has its input channels reversed, which is exactly equivalent
to feeding BGR to the original network.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from models.loading import WEIGHTS_FILE_ERRORS, weights_unavailable
from utils.errors import BadInput

#: backbone name -> (keras.applications builder, names of the C3, C4, C5 layers).
RESNETS = {
    "resnet50": (
        keras.applications.ResNet50,
        ("conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    ),
    "resnet101": (
        keras.applications.ResNet101,
        ("conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
    ),
}
#: Where keras.applications downloads its ResNet weights from.
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"


def imagenet_weights_file(backbone: str) -> Path:
    """Path where Keras caches (and looks for) the no-top ImageNet weights of `backbone`."""
    _check_backbone(backbone)
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / f"{backbone}_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _check_backbone(backbone: str) -> None:
    """Raise ValueError for a backbone name this module does not build."""
    if backbone not in RESNETS:
        raise ValueError(f"unknown ResNet backbone {backbone!r}; choose one of {sorted(RESNETS)}")


def _pretrained_reference(backbone: str, weights: str) -> keras.Model:
    """keras.applications model (no top) with `weights` loaded; clear BadInput when unavailable."""
    builder = RESNETS[backbone][0]
    if weights == "imagenet":
        cached = imagenet_weights_file(backbone)
        try:
            return builder(include_top=False, weights="imagenet", input_shape=(None, None, 3))
        except Exception as err:
            if not weights_unavailable(err):  # a bug, not a failed download or a bad cached file
                raise
            raise BadInput(
                f"could not load the ImageNet weights of {backbone} ({err}); without internet, "
                f"download {WEIGHTS_URL}{cached.name} elsewhere and copy it to {cached}, "
                f"or pass the file's path as weights"
            ) from err
    path = Path(weights).expanduser()
    if not path.is_file():
        raise BadInput(
            f"{backbone} weights file {str(path)!r} does not exist; pass None, 'imagenet' or the "
            f"path of a keras.applications {backbone} (include_top=False) weights file"
        )
    try:
        return builder(include_top=False, weights=str(path), input_shape=(None, None, 3))
    except WEIGHTS_FILE_ERRORS as err:
        raise BadInput(
            f"{str(path)!r} is not a keras.applications {backbone} (include_top=False) weights "
            f"file: {err}"
        ) from err


def resnet_features(
    x: keras.KerasTensor, backbone: str = "resnet50", weights: str | None = None
) -> list[keras.KerasTensor]:
    """C3 (1/8, 512 ch), C4 (1/16, 1024 ch) and C5 (1/32, 2048 ch) of a ResNet on `x`.

    Args:
        x: the normalised input, `normalize_input(image, "caffe")` of a (N, H, W, 3) RGB image.
        backbone: "resnet50" or "resnet101".
        weights: None (random), "imagenet" (Keras' cached file under ~/.keras/models, downloaded
            when online) or the path of a keras.applications weights file of the same backbone
            without its top (`.h5` or `.weights.h5`).

    Returns:
        [C3, C4, C5]; their layers are named as in keras.applications (see RESNETS).
    """
    _check_backbone(backbone)
    builder, names = RESNETS[backbone]
    reference = None if weights is None else _pretrained_reference(backbone, weights)
    base = builder(include_top=False, weights=None, input_tensor=x)
    if reference is not None:
        for layer in reference.layers:
            if layer.weights:
                base.get_layer(layer.name).set_weights(layer.get_weights())
        conv1 = base.get_layer("conv1_conv")
        kernel, bias = conv1.get_weights()
        conv1.set_weights([kernel[:, :, ::-1, :], bias])  # BGR-trained weights take RGB input
    return [base.get_layer(name).output for name in names]
