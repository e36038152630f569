"""scripts/gpu_bench.sh without a GPU: its dry run lists every step for both GPU backends and
the PyTorch fp16 peer on one set of pairs; its Python steps run here on CPU against the real
local tritonserver (pairs of exact length, the client measurement with server padding counters,
the report), only the CUDA step (FlagReranker on the GPU) is replaced by a stand-in result."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from benchmarks import gpu_bench

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_bench.sh"


def test_dry_run_exports_verifies_and_benchmarks_both_backends_and_pytorch_fp16(tmp_path):
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text("#!/usr/bin/env bash\nexit 0\n")
    fake.chmod(0o755)
    env = {**os.environ, "DRY_RUN": "1", "DOCKER": str(fake), "OUT": str(tmp_path / "gpu"), "MODEL": str(tmp_path)}
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for backend in ("tensorrt", "onnxruntime"):
        assert f"--backend {backend} --precision fp16 --max-length 2048" in out
        assert f"make verify URL=localhost:8001 REPO={tmp_path}/gpu/{backend}/model_repository" in out
        assert f"--system Triton {backend} fp16 --concurrency 1,2,4 --trials 5" in out
    assert out.count(f"--pairs {tmp_path}/gpu/pairs.json") == 2  # the same pairs for both backends
    assert "--tokens 128,512,2048" in out
    torch_step = next(line for line in out.splitlines() if "gpu_bench torch" in line)
    assert "--gpus device=0" in torch_step and "--pairs /out/pairs.json" in torch_step
    assert "--concurrency 1,2,4 --trials 5" in torch_step
    report = next(line for line in out.splitlines() if "gpu_bench report" in line)
    assert all(f"{tmp_path}/gpu/{b}/bench.json" in report for b in ("tensorrt", "onnxruntime"))
    assert f"{tmp_path}/gpu/torch.json" in report


def test_flag_embedding_in_the_gpu_step_is_the_pinned_version():
    pinned = re.search(r"^FlagEmbedding==(\S+)$", (ROOT / "requirements" / "dev.txt").read_text(), re.MULTILINE).group(
        1
    )
    assert f'FLAG_EMBEDDING="FlagEmbedding=={pinned}"' in SCRIPT.read_text()


def test_python_steps_on_cpu_against_the_real_server(server, python_repo, tmp_path):
    tokenizer = str(python_repo / "tokenizer" / "1" / "tokenizer.json")
    pairs = tmp_path / "pairs.json"
    assert (
        gpu_bench.main(
            [
                "pairs",
                "--tokenizer",
                tokenizer,
                "--tokens",
                "128,256",
                "--requests",
                "2",
                "--passages",
                "3",
                "--out",
                str(pairs),
            ]
        )
        == 0
    )
    data = json.loads(pairs.read_text())
    for tokens, block in data.items():
        # A window cut inside a word may give up a token or two; never more than asked.
        assert all(int(tokens) - 2 <= n <= int(tokens) for n in block["pair_tokens"]), block["pair_tokens"]
    triton = tmp_path / "triton.json"
    assert (
        gpu_bench.main(
            [
                "triton",
                "--url",
                server.grpc_url,
                "--metrics-url",
                server.metrics_url,
                "--pairs",
                str(pairs),
                "--system",
                "Triton python fp32",
                "--concurrency",
                "1,2",
                "--trials",
                "2",
                "--out",
                str(triton),
            ]
        )
        == 0
    )
    rows = json.loads(triton.read_text())["rows"]
    assert len(rows) == 4 and all(len(r["trials"]) == 2 and 0 < r["padding_efficiency"] <= 1 for r in rows)
    # Stand-in for the CUDA step: same shape, the reference taken from the server's own logits.
    stand_in = {
        "rows": [{**r, "system": gpu_bench.PEER} for r in rows],
        "reference": {str(r["tokens"]): r["scores"] for r in rows if r["concurrency"] == 1},
        "reference_system": "stand-in",
    }
    (tmp_path / "torch.json").write_text(json.dumps(stand_in))
    assert (
        gpu_bench.main(
            [
                "report",
                "--results",
                str(triton),
                str(tmp_path / "torch.json"),
                "--passages",
                "3",
                "--out",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "report" / "bench_gpu.json").read_text())
    assert report["padding_source"] == "server_metrics"
    assert all(r["same_inputs"] and r["max_abs_logit_vs_reference"] == 0 for r in report["rows"])
    assert {line["tokens"] for line in report["ratios"]} == {128, 256}
    assert (tmp_path / "report" / "bench_gpu.png").stat().st_size > 0
