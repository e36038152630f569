"""The Python code Triton serves (model_repository/), imported here as the server imports it,
so the export, its gates, the configs, the benchmarks and the tests use the serving code itself
rather than a copy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SOURCE_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"


def _serving_module(name: str, path: Path) -> ModuleType:
    """Import `path` once, under `name`: the name the server's own imports use."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def pair_tokenization_module() -> ModuleType:
    """model_repository/tokenizer/1/pair_tokenization.py, imported once under the name the server uses."""
    return _serving_module("pair_tokenization", SOURCE_REPOSITORY / "tokenizer" / "1" / "pair_tokenization.py")


def routing_module() -> ModuleType:
    """model_repository/length_router/1/routing.py (copied into each Python-backend class model):
    the split rule the cross-encoder applies inside its own runs (batch_parts, cut)."""
    return _serving_module("routing", SOURCE_REPOSITORY / "length_router" / "1" / "routing.py")


def deferred_counters_module() -> ModuleType:
    """model_repository/tokenizer/1/deferred_counters.py (copied into each Python-backend class model):
    the models' own Prometheus counters, sent once every FLUSH_S off the request path."""
    return _serving_module("deferred_counters", SOURCE_REPOSITORY / "tokenizer" / "1" / "deferred_counters.py")
