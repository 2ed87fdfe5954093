"""The benchmarks: timing, job specs, FLOPs, rows and their reports."""
