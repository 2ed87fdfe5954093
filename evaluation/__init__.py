"""Official Cityscapes metrics: the confusion matrix, the pixel-level evaluation, its report."""
