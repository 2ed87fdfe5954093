"""PLACEHOLDER until its helper lands: separable_unet. Replace this whole file."""

from models.info import ModelInfo


def build_separable_unet(input_shape, num_classes=19, aux=False, weights=None, **options):
    raise NotImplementedError("separable_unet is being built")


INFO = ModelInfo(name="separable_unet", builder=build_separable_unet, size_multiple=32, normalization="imagenet",
                 reference_params=None, reference_source="")
