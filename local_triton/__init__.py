"""Run the real tritonserver bundled in the nvidia-pytriton wheel (Triton 2.51.0, CPU)."""
