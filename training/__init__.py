"""Training: the distributed step, checkpoints, logs, schedules, the learning-rate finder."""
