"""Side-by-side benchmark: our Triton path vs in-process ONNX Runtime and the peers."""
