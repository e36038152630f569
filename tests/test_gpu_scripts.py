"""The GPU scripts, exercised here without a GPU: the sweep's dry run shows every step, and with a
stand-in `docker` whose server container dies, the sweep stops in seconds with the container's
log instead of waiting forever."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from local_triton.server import free_port

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "scripts" / "gpu_tensorrt_sweep.sh"

FAKE_DOCKER = """#!/usr/bin/env bash
# Stand-in docker: builds and one-shot runs succeed, the served container is already dead.
case "$1" in
  run) for a in "$@"; do [ "$a" = -d ] && { echo deadbeef; exit 0; }; done; exit 0 ;;
  inspect) echo false ;;
  logs) echo "E1130 tritonserver: failed to load model 'cross_encoder'" ;;
  *) exit 0 ;;
esac
"""


@pytest.fixture
def fake_docker(tmp_path) -> Path:
    path = tmp_path / "bin" / "docker"
    path.parent.mkdir()
    path.write_text(FAKE_DOCKER)
    path.chmod(0o755)
    return path


def test_sweep_dry_run_lists_export_verify_and_both_perf_targets(tmp_path, fake_docker):
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "DOCKER": str(fake_docker),
        "OUT": str(tmp_path / "gpu"),
        "MODEL": str(tmp_path),
        "EVAL_DATA": str(tmp_path / "scifact"),
    }
    proc = subprocess.run(["bash", str(SWEEP)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for backend in ("tensorrt", "onnxruntime"):
        assert f"--backend {backend} --precision fp16" in out
        assert f"REPORT={tmp_path}/gpu/{backend}/verify.json" in out
        assert f"make eval URL=localhost:8001 DATA={tmp_path}/scifact EVAL_OUT={tmp_path}/gpu/{backend}/eval" in out
    assert out.count("perf_analyzer -m rerank") == 8 and out.count("perf_analyzer -m cross_encoder") == 8
    assert "--cross-encoder" in out and "--user" in out and "timeout 600" in out


def test_sweep_takes_device_and_ports_serves_with_the_images_launcher_and_runs_fp32_external_once(
    tmp_path, fake_docker
):
    """Issue 25 item 9: GPU and ports are parameters; the server is the image's own command
    (docker/serve.py, which certifies itself), never a bare tritonserver; the fp32 external-data
    graph (onnxruntime backend, fp32) is exported and served once."""
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "DOCKER": str(fake_docker),
        "OUT": str(tmp_path / "gpu"),
        "MODEL": str(tmp_path),
        "GPU": "device=2",
        "GRPC_PORT": "19001",
        "HTTP_PORT": "19000",
        "METRICS_PORT": "19002",
        "CERT_PORT": "19003",
    }
    out = subprocess.run(["bash", str(SWEEP)], capture_output=True, text=True, env=env, timeout=60).stdout
    assert "device=0" not in out and "--gpus device=2" in out
    assert "localhost:8001" not in out and "-u localhost:19001" in out and "URL=localhost:19001" in out
    servers = [x for x in out.splitlines() if " run -d " in x]
    assert len(servers) == 3  # tensorrt, onnxruntime, and the fp32 external-data graph
    for line in servers:
        assert "tritonserver" not in line and line.rstrip().endswith("bge-reranker-triton:0.1.0")
        assert "-p 127.0.0.1:19003:8003" in line and "-p 127.0.0.1:19001:8001" in line
    assert out.count("--precision fp32") == 1 and "--backend onnxruntime --precision fp32 --max-length 512" in out
    assert "fp32 external-data graph: PASS" in out  # dry run: what the line looks like


def test_gpu_scripts_fetch_nothing_at_build_time():
    """No pip install in the plan build (GPU hosts often have no network): the exporter image brings
    Polygraphy and TensorRT's bindings."""
    from export.settings import ServingLimits
    from export.tensorrt_build import EXPORTER_IMAGE, PlanBuild, write_build_files

    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"plan-{os.getpid()}"
    script = write_build_files(folder, PlanBuild(ServingLimits())).read_text()
    assert "pip install" not in script and "uv pip" not in script
    assert f'image="${{TENSORRT_IMAGE:-{EXPORTER_IMAGE}}}"' in script and "--entrypoint bash" in script
    lib = (ROOT / "scripts" / "lib" / "docker_triton.sh").read_text()
    assert f'EXPORTER_IMAGE="{EXPORTER_IMAGE}"' in lib


def test_sweep_stops_when_the_server_container_dies(tmp_path, fake_docker):
    env = {
        **os.environ,
        "DOCKER": str(fake_docker),
        "OUT": str(tmp_path / "gpu"),
        "MODEL": str(tmp_path),
        "BACKENDS": "tensorrt",
        "READY_TIMEOUT": "600",
        "SELFCERT_URL": f"http://127.0.0.1:{free_port()}/metrics",
    }
    start = time.monotonic()
    proc = subprocess.run(["bash", str(SWEEP)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - start < 60
    assert "exited before it was ready" in proc.stderr and "failed to load model" in proc.stderr


def test_cross_encoder_input_data_has_exact_length(python_repo, tmp_path):
    import json

    out = tmp_path / "ids.json"
    subprocess.run(
        [
            "python",
            "-m",
            "loadtest.fixed_length",
            "--tokenizer",
            str(python_repo / "tokenizer" / "1" / "tokenizer.json"),
            "--tokens",
            "128",
            "--cross-encoder",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        env={**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"},
    )
    rows = json.loads(out.read_text())["data"]
    assert rows and all(len(r["input_ids"]["content"]) == 128 == r["input_ids"]["shape"][0] for r in rows)
    assert all(r["attention_mask"]["content"][0] == 1 for r in rows)
