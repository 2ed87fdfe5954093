"""Floor 5, the benchmarks: benchmark.py's options, the default inference benchmark (latency)
and its jobs, rows, reports and plots, the machine's peaks (timing), compute and traffic counts
(flops, roofline), the other benchmarks (model_table, train_speed, data, eval_speed, fit, runs)
and the study."""
