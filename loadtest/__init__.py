"""Load generation: the shared workload and perf_analyzer sweeps against the `rerank` ensemble."""
