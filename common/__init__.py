"""Code shared by the export, the load tests, the benchmarks and the tests (which alone import
tests/): the calibration and held-out certificate texts, the serving pair tokenizer loaded as
Triton loads it, the bare `rerank` call, and the random-weight stand-in model
(`python -m common.standin_model OUT_DIR [--shape tiny|bench|real]`)."""
