"""No-pickle proof by behaviour (issue 13): an export runs with every unpickler in the process
made to fail, and still succeeds. A string search cannot see a library unpickling on our
behalf (transformers falls back to torch.load for *.bin weights); this can."""

from __future__ import annotations

import ast
import pickle
import shutil
from pathlib import Path

import pytest

from export.__main__ import main as export_main

ROOT = Path(__file__).resolve().parent.parent


class Unpickled(AssertionError):
    pass


# Every attempt is recorded too: a library may catch the error and re-raise its own (transformers
# turns it into an OSError about the file), or even fall back silently.
ATTEMPTS: list[str] = []


def _refuse(*_args, **_kwargs):
    ATTEMPTS.append("unpickle")
    raise Unpickled("something unpickled during the export")


class _RefusingUnpickler(pickle.Unpickler):
    def __init__(self, *args, **kwargs):
        _refuse()


@pytest.fixture
def no_unpickling(monkeypatch):
    import torch

    monkeypatch.setattr(torch, "load", _refuse)
    monkeypatch.setattr(pickle, "load", _refuse)
    monkeypatch.setattr(pickle, "loads", _refuse)
    monkeypatch.setattr(pickle, "Unpickler", _RefusingUnpickler)
    ATTEMPTS.clear()
    yield ATTEMPTS


def _with_pickle_beside(tiny_model: Path, target: Path) -> Path:
    """The stand-in model plus a pickled state dict next to its safetensors, as Hub repos have."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(tiny_model, target)
    torch.save(load_file(str(target / "model.safetensors")), target / "pytorch_model.bin")
    return target


def test_the_refusal_catches_real_pickle_loading(tiny_model, tmp_path, no_unpickling):
    """Sanity: with the patches on, loading pickled weights does fail - so the export below would
    fail too if any step unpickled."""
    import torch  # noqa: F401 - patched by the fixture
    from transformers import XLMRobertaForSequenceClassification

    model_dir = _with_pickle_beside(tiny_model, tmp_path / "model")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises((Unpickled, OSError)):
        XLMRobertaForSequenceClassification.from_pretrained(model_dir, use_safetensors=False)
    assert no_unpickling, "the patched unpicklers were never reached"


def test_export_succeeds_with_every_unpickler_failing(tiny_model, tmp_path, no_unpickling):
    model_dir = _with_pickle_beside(tiny_model, tmp_path / "model")
    repo = tmp_path / "repo"
    assert (
        export_main(["--model", str(model_dir), "--repo", str(repo), "--backend", "python", "--precision", "fp32"]) == 0
    )
    assert (repo / "cross_encoder" / "1" / "model.onnx").exists()
    assert not no_unpickling, "an unpickler was called (and its failure swallowed) during the export"


def test_every_from_pretrained_passes_use_safetensors():
    calls = []
    for folder in (
        "export",
        "tests",
        "client",
        "local_triton",
        "benchmarks",
        "loadtest",
        "scripts",
        "docker",
        "model_repository",
    ):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "from_pretrained":
                    ok = any(
                        k.arg == "use_safetensors" and isinstance(k.value, ast.Constant) and k.value.value is True
                        for k in node.keywords
                    )
                    calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", ok))
    assert calls, "no from_pretrained call found: the scan is broken"
    # The sanity test above deliberately loads pickled weights, with every unpickler refused.
    missing = [where for where, ok in calls if not ok and not where.startswith("tests/test_no_pickle.py")]
    assert not missing, missing
