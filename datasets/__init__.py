"""Cityscapes discovery, label mapping, tf.data pipeline and the synthetic generator."""
