"""What a Python-backend cross-encoder recorded about the batches it ran (its gauges)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.server_helpers import metric

_SOURCE = Path(__file__).resolve().parent.parent / "model_repository" / "cross_encoder" / "1" / "shape_limits.py"


def shape_limits_module():
    """The served model's own module (its metric names and checks), imported from its file."""
    spec = importlib.util.spec_from_file_location("served_shape_limits", _SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def class_shape_metrics(metrics_url: str, model: str) -> dict[str, float]:
    names = shape_limits_module()
    return {
        key: metric(metrics_url, getattr(names, f"METRIC_{key.upper()}"), model)
        for key in ("max_tokens", "max_rows", "max_length", "min_length")
    }
