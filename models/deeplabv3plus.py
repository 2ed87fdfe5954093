"""PLACEHOLDER until its helper lands: deeplabv3+. Replace this whole file."""

from models.info import ModelInfo


def build_deeplabv3plus(input_shape, num_classes=19, aux=False, weights=None, **options):
    raise NotImplementedError("deeplabv3+ is being built")


INFO = ModelInfo(name="deeplabv3+", builder=build_deeplabv3plus, size_multiple=32, normalization="imagenet",
                 reference_params=None, reference_source="")
