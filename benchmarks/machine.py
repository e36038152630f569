"""Facts about the machine a benchmark ran on, and its measured fp32 GEMM rate."""

from __future__ import annotations

import os
import platform
import time


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):  # noqa: SIM115 - read once, closed by the GC
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gemm_gflops(size: int = 2048, repeats: int = 20) -> float:
    """Best-of-N fp32 matmul rate with torch's threads: the ceiling our numbers are compared to.
    On a shared machine every repeat may be slowed by other work, so callers measure it more
    than once (bench.py: at start and at end) and keep the best."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def facts() -> dict:
    import onnxruntime
    import torch
    import transformers

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "transformers": transformers.__version__,
        "triton": "2.51.0 (nvidia-pytriton 0.7.0, CPU)",
        "fp32_gemm_gflops": round(gemm_gflops(), 1),
    }


def flops_per_pair(tokens: int, layers: int, hidden: int) -> float:
    """Encoder FLOPs for one pair of n tokens: projections + FFN (24 h^2 n) and attention (4 h n^2)
    per layer. For 24 x 1024 this is 0.604e9 n + 98304 n^2."""
    return layers * (24 * hidden**2 * tokens + 4 * hidden * tokens**2)
