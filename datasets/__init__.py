"""Cityscapes discovery and reading, augmentation, the tf.data pipeline and the synthetic generator."""
