"""PLACEHOLDER until its helper lands: bayes_segnet. Replace this whole file."""

from models.info import ModelInfo


def build_bayes_segnet(input_shape, num_classes=19, aux=False, weights=None, **options):
    raise NotImplementedError("bayes_segnet is being built")


INFO = ModelInfo(name="bayes_segnet", builder=build_bayes_segnet, size_multiple=32, normalization="imagenet",
                 reference_params=None, reference_source="")
