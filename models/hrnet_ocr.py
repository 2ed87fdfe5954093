"""PLACEHOLDER until its helper lands: hrnet_ocr. Replace this whole file."""

from models.info import ModelInfo


def build_hrnet_ocr(input_shape, num_classes=19, aux=False, weights=None, **options):
    raise NotImplementedError("hrnet_ocr is being built")


INFO = ModelInfo(name="hrnet_ocr", builder=build_hrnet_ocr, size_multiple=32, normalization="imagenet",
                 reference_params=None, reference_source="")
