"""TensorRT's bindings as the exporter image installs them (export/trt_import.py), and
`--backend tensorrt` without TensorRT: an error naming what is missing, never a skip that exits 0
without plans. No TensorRT here: a stand-in `tensorrt_bindings` package (the wheel's module name;
its real .so needs libnvinfer.so.10) shows the import path; the missing case is this very venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from export import pipeline
from export.trt_import import BINDINGS_REQUIREMENT, TensorRTMissing

ROOT = Path(__file__).resolve().parent.parent


def _run(code_or_args: list[str], pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(pythonpath or ""), str(ROOT)]))}
    return subprocess.run([sys.executable, *code_or_args], cwd=ROOT, env=env, capture_output=True, text=True)


def test_only_the_bindings_wheel_installed_still_imports_as_tensorrt(tmp_path):
    """What tensorrt-cu12-bindings installs: `tensorrt_bindings` and no `tensorrt`. The shim
    loads it and registers it as `tensorrt` for polygraphy's own `import tensorrt`."""
    (tmp_path / "tensorrt_bindings").mkdir()
    (tmp_path / "tensorrt_bindings" / "__init__.py").write_text('__version__ = "10.5.0"\n')
    proc = _run(["-m", "export.trt_import"], tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "tensorrt 10.5.0", proc.stderr
    code = "from export.trt_import import load_tensorrt; load_tensorrt(); import tensorrt; print(tensorrt.__name__)"
    assert _run(["-c", code], tmp_path).stdout.strip() == "tensorrt_bindings"


def test_the_image_build_check_fails_without_the_bindings():
    proc = _run(["-m", "export.trt_import"])
    assert proc.returncode != 0 and BINDINGS_REQUIREMENT in proc.stderr


def test_backend_tensorrt_without_tensorrt_is_an_error_naming_what_is_missing(tmp_path):
    proc = _run(["-m", "export", "--backend", "tensorrt", "--model", str(tmp_path), "--repo", str(tmp_path / "r")])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--backend tensorrt" in proc.stderr and BINDINGS_REQUIREMENT in proc.stderr
    assert "import tensorrt" in proc.stderr and "--plan-later" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_the_tensorrt_stage_runs_for_backend_tensorrt_and_fails_without_tensorrt(tmp_path):
    """The stage is not skipped when TensorRT is missing (it was: `and tensorrt_available()`)."""
    stage = next(s for s in pipeline.STAGES if s.name == "tensorrt")
    ctx = SimpleNamespace(args=pipeline.ExportArgs(backend="tensorrt"))
    assert stage.applies(ctx)
    with pytest.raises(TensorRTMissing, match="tensorrt-cu12-bindings==10.5.0"):
        stage.run(ctx)
    assert not stage.applies(SimpleNamespace(args=pipeline.ExportArgs(backend="tensorrt", plan_later=True)))
