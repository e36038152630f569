"""scripts/gpu_bench.sh without a GPU: its dry run lists every step for both GPU backends and
the PyTorch fp16 peer on one set of pairs, and the long-document case (two exports, each
served, each workload run); its Python steps run here on CPU against the real local
tritonserver (pairs of exact length, the client measurement with server padding counters, the
report, the long-document case and its report), only the CUDA step (FlagReranker on the GPU) is
replaced by a stand-in result."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmarks import gpu_bench, long_documents
from tests.references import flag_scores

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_bench.sh"


def _dry_run(tmp_path: Path, **env: str) -> str:
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text("#!/usr/bin/env bash\nexit 0\n")
    fake.chmod(0o755)
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "DOCKER": str(fake),
        "OUT": str(tmp_path / "gpu"),
        "MODEL": str(tmp_path),
        **env,
    }
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_dry_run_exports_verifies_and_benchmarks_both_backends_and_pytorch_fp16(tmp_path):
    out = _dry_run(tmp_path)
    for backend in ("tensorrt", "onnxruntime"):
        assert f"--backend {backend} --precision fp16 --max-length 2048" in out
        assert f"make verify URL=localhost:8001 REPO={tmp_path}/gpu/{backend}/model_repository" in out
        assert f"--system Triton {backend} fp16 --concurrency 1,2,4 --trials 10" in out
    # the same pairs for both backends, measured alone and interleaved with the peers
    assert out.count(f"--pairs {tmp_path}/gpu/pairs.json") == 4
    assert "--tokens 128,512,2048" in out
    torch_step = next(line for line in out.splitlines() if "gpu_bench torch" in line)
    assert "--gpus device=0" in torch_step and "--pairs /out/pairs.json" in torch_step
    assert "--concurrency 1,2,4 --trials 10" in torch_step
    report = next(line for line in out.splitlines() if "gpu_bench report" in line)
    assert all(f"{tmp_path}/gpu/{b}/bench.json" in report for b in ("tensorrt", "onnxruntime"))
    assert f"{tmp_path}/gpu/torch.json" in report


PEER_IMAGES = {
    "tei": "ghcr.io/huggingface/text-embeddings-inference:hopper-1.8",
    "vllm": "vllm/vllm-openai:v0.10.2",
    "infinity": "michaelf34/infinity:0.0.77",
}


def test_dry_run_serves_tei_vllm_and_infinity_beside_ours_interleaved_and_guarded(tmp_path):
    """The peers that serve this model run from their pinned images on the same GPU, from the same
    model folder, before any Triton backend is measured; each backend's interleaved run names
    ours and all three on the same pairs, with at most PEER_GUARD calls in flight per peer; the
    peers are removed before the report."""
    lines = _dry_run(tmp_path, PEER_GUARD="3").splitlines()
    starts = {}
    for kind, image in PEER_IMAGES.items():
        (line,) = [x for x in lines if f" {image} " in x]
        assert " run -d --gpus device=0 " in line and f"-v {tmp_path.resolve()}:/model:ro" in line
        assert "--dtype float16" in line and "/model" in line.split(image, 1)[1]
        starts[kind] = lines.index(line)
    assert "--max-client-batch-size 32" in lines[starts["tei"]]
    assert "--gpu-memory-utilization 0.2" in lines[starts["vllm"]]  # room for Triton on the same GPU
    runs = [x for x in lines if "gpu_bench interleaved" in x]
    assert len(runs) == 2
    for backend, line in zip(("tensorrt", "onnxruntime"), runs):
        assert f"--system Triton {backend} fp16=triton@localhost:8001" in line
        for name, kind, port in (("TEI", "tei", 8081), ("vLLM", "vllm", 8082), ("Infinity", "infinity", 8083)):
            assert f"--system {name}={kind}@http://localhost:{port} --guard {name}=3" in line
            assert f"-p 127.0.0.1:{port}:" in lines[starts[kind]]
        assert f"--pairs {tmp_path}/gpu/pairs.json" in line and "--concurrency 1,2,4 --trials 10" in line
        assert lines.index(line) > max(starts.values())
    removed = [i for i, x in enumerate(lines) if x.endswith(tuple(f"rm -f dry-run-{k}" for k in PEER_IMAGES))]
    report = next(i for i, x in enumerate(lines) if "gpu_bench report" in x)
    assert len(removed) == 3 and max(lines.index(x) for x in runs) < min(removed) and max(removed) < report
    assert all(f"{tmp_path}/gpu/{b}/interleaved.json" in lines[report] for b in ("tensorrt", "onnxruntime"))


def test_dry_run_without_peers_runs_ours_alone(tmp_path):
    out = _dry_run(tmp_path, PEERS="")
    assert "gpu_bench interleaved" not in out and not any(image in out for image in PEER_IMAGES.values())
    assert "gpu_bench triton" in out


def test_peer_clients_and_the_interleaved_step_against_our_rest_dialects(server, rest, tmp_path, python_repo):
    """`gpu_bench interleaved` for real on the CPU: ours over gRPC, and the three peer clients
    (TEI's, vLLM's and Infinity's request and response shapes) against this repository's REST
    service, which answers in those dialects in front of the same server. Every system scores the
    same pairs, so each peer's logits (vLLM's sigmoid turned back) agree with ours; the guard
    holds a peer to its limit; every ratio is paired over the same trials."""
    from benchmarks import interleave

    tokenizer = str(python_repo / "tokenizer" / "1" / "tokenizer.json")
    pairs = tmp_path / "pairs.json"
    gpu_bench.main(
        ["pairs", "--tokenizer", tokenizer, "--tokens", "128", "--requests", "2", "--passages", "3"]
        + ["--out", str(pairs)]
    )
    out = tmp_path / "interleaved.json"
    systems = ["Triton python fp32=triton@" + server.grpc_url, f"TEI=tei@{rest}", f"vLLM=vllm@{rest}"]
    systems.append(f"Infinity=infinity@{rest}/infinity")
    args = ["interleaved", "--pairs", str(pairs), "--concurrency", "1,2", "--trials", "3", "--out", str(out)]
    for system in systems:
        args += ["--system", system]
    assert gpu_bench.main([*args, "--guard", "TEI=1", "--tei-max-texts", "2"]) == 0
    result = json.loads(out.read_text())
    rows = {(r["system"], r["concurrency"]): r for r in result["rows"]}
    ours = np.asarray(rows[("Triton python fp32", 1)]["scores"])
    # Our REST service's Cohere-shaped /infinity route answers the sigmoid whatever raw_scores says
    # (a real Infinity answers the logit when asked): compared as what each route returns.
    expected = {"TEI": ours, "vLLM": ours, "Infinity": 1 / (1 + np.exp(-ours))}
    for name in ("TEI", "vLLM", "Infinity"):
        np.testing.assert_allclose(rows[(name, 2)]["scores"], expected[name], atol=1e-4)
        assert len(rows[(name, 1)]["trials"]) == 3 and rows[(name, 1)]["interleaved"]
    assert rows[("TEI", 2)]["guard"] == "at most 1 in flight"
    assert {(x["vs"], x["concurrency"]) for x in result["paired"]} == {
        (n, c) for n in ("TEI", "vLLM", "Infinity") for c in (1, 2)
    }
    assert all(x["verdict"] in interleave.VERDICTS and x["trials"] == 3 for x in result["paired"])
    with pytest.raises(SystemExit, match="NAME=KIND@URL"):
        gpu_bench.main(["interleaved", "--pairs", str(pairs), "--out", str(out), "--system", "TEI=tgi@x"])


def test_dry_run_long_documents_exports_serves_and_runs_both_cases(tmp_path):
    """`make bench-long`'s cases (benchmarks/long_documents.py CASES) on the GPU: for each, an
    fp16 export at its max_length, Triton serving that repository on the GPU, then the workload
    through the client in its mode against it (under a timeout), then the container removed;
    one report over both results."""
    lines = _dry_run(tmp_path).splitlines()
    folder = (tmp_path / "gpu" / "long_documents").resolve()
    steps = []
    for length, mode in long_documents.CASES:
        (export,) = [line for line in lines if f"-v {folder}/{length}:/out" in line]
        assert f"--backend tensorrt --precision fp16 --max-length {length} --repo /out/model_repository" in export
        (serve,) = [line for line in lines if f"-v {folder}/{length}/model_repository:/models:ro" in line]
        # The image's own command (docker/serve.py, self-certifying), not a bare tritonserver.
        assert " run -d --gpus device=0 " in serve and serve.endswith("bge-reranker-triton:0.1.0")
        (workload,) = [line for line in lines if "gpu_bench long " in line and f"--max-length {length} " in line]
        assert workload.startswith("+ timeout 1800 ") and f"--mode {mode} " in workload
        assert f"--url localhost:8001 --max-length {length} --mode {mode} --tokenizer " in workload
        assert f"long_documents/{length}/model_repository/tokenizer/1/tokenizer.json" in workload
        assert "--passages 100 --repeats 2 " in workload and workload.endswith(f"long_documents/{length}/long.json")
        after = lines.index(workload)
        stop = after + next(i for i, line in enumerate(lines[after:]) if line.endswith(" rm -f dry-run"))
        steps.append((lines.index(export), lines.index(serve), lines.index(workload), stop))
    assert steps[0] == tuple(sorted(steps[0])) and steps[1] == tuple(sorted(steps[1])) and steps[0][3] < steps[1][0]
    (report,) = [line for line in lines if "gpu_bench long-report" in line]
    assert all(f"long_documents/{length}/long.json" in report for length, _ in long_documents.CASES)
    assert lines.index(report) > steps[1][3]


def test_dry_run_without_long_backend_skips_the_long_documents(tmp_path):
    out = _dry_run(tmp_path, LONG_BACKEND="")
    assert "long_documents" not in out and "gpu_bench report" in out


def test_flag_embedding_in_the_gpu_step_is_the_pinned_version():
    pinned = re.search(r"^FlagEmbedding==(\S+)$", (ROOT / "requirements" / "dev.txt").read_text(), re.MULTILINE).group(
        1
    )
    assert f'FLAG_EMBEDDING="FlagEmbedding=={pinned}"' in SCRIPT.read_text()


def test_python_steps_on_cpu_against_the_real_server(server, python_repo, tiny_model, tmp_path):
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
    # The PyTorch step for real, on the CPU (FlagReranker fp32 there: FlagEmbedding 1.4.2 turns
    # use_fp16 off on a CPU): its reference is FlagReranker's own scores of the same pairs, so
    # our rows are compared with an independent computation, not with themselves.
    torch_json = tmp_path / "torch.json"
    assert (
        gpu_bench.main(
            ["torch", "--model", str(tiny_model), "--pairs", str(pairs), "--device", "cpu", "--threads", "2"]
            + ["--passages", "3", "--concurrency", "1", "--trials", "1", "--out", str(torch_json)]
        )
        == 0
    )
    peer = json.loads(torch_json.read_text())
    for tokens, block in data.items():
        expected = flag_scores(tiny_model, [(q, p) for q, ps in block["requests"] for p in ps], normalize=False)
        np.testing.assert_allclose(peer["reference"][tokens], expected, atol=1e-5)

    def report(torch_results: Path, out: Path) -> dict:
        args = ["report", "--results", str(triton), str(torch_results), "--passages", "3", "--out", str(out)]
        assert gpu_bench.main(args) == 0
        return json.loads((out / "bench_gpu.json").read_text())

    result = report(torch_json, tmp_path / "report")
    assert result["padding_source"] == "server_metrics"
    ours = [r for r in result["rows"] if r["system"] == "Triton python fp32"]
    assert len(ours) == 4 and all(r["same_inputs"] and r["max_abs_logit_vs_reference"] <= 1e-4 for r in ours)
    assert {line["tokens"] for line in result["ratios"]} == {128, 256}
    assert all(line["vs_pytorch_fp16_at_equal_concurrency"] for line in result["ratios"])
    assert (tmp_path / "report" / "bench_gpu.png").stat().st_size > 0
    # Negative control: a reference computed on other pairs (each length's scores reversed)
    # marks our rows as not the same inputs and keeps them out of every ratio.
    other = {**peer, "reference": {t: list(reversed(v)) for t, v in peer["reference"].items()}}
    (tmp_path / "other.json").write_text(json.dumps(other))
    refused = report(tmp_path / "other.json", tmp_path / "refused")
    assert not any(r["same_inputs"] for r in refused["rows"] if r["system"] == "Triton python fp32")
    assert not any(line["vs_pytorch_fp16_at_equal_concurrency"] for line in refused["ratios"])


def test_long_document_steps_on_cpu_against_the_real_server(server, python_repo, tmp_path):
    """The GPU script's long-document steps, here on the session's CPU server (max_length 512,
    both modes, a small workload): the same rows as benchmarks/long_documents.py, one report."""
    args = ["long", "--url", server.grpc_url, "--tokenizer", str(python_repo / "tokenizer" / "1" / "tokenizer.json")]
    args += ["--system", "Triton python fp32", "--passages", "3", "--min-tokens", "600", "--max-tokens", "1200"]
    args += ["--repeats", "1"]
    results = {}
    for mode in ("window", "truncate"):
        results[mode] = tmp_path / f"{mode}.json"
        assert gpu_bench.main([*args, "--max-length", "512", "--mode", mode, "--out", str(results[mode])]) == 0
    window, truncate = (json.loads(results[m].read_text()) for m in ("window", "truncate"))
    assert window["workload"] == truncate["workload"] and window["workload"]["passages"] == 3
    (w,), (t,) = window["rows"], truncate["rows"]
    assert w["case"] == long_documents.label(512, "window") and w["model_rows"] > 3 and w["truncated"] == 0
    assert t["mode"] == "truncate" and t["model_rows"] == 3 and t["truncated"] == 3
    assert all(0 < r["padding_efficiency"] <= 1 and r["passages_per_s"] > 0 for r in (w, t))
    assert gpu_bench.main(["long-report", "--results", *map(str, results.values()), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "long_documents_gpu.json").read_text())
    assert [r["case"] for r in report["rows"]] == [w["case"], t["case"]]
    assert report["facts"]["texts_sha256"] == window["workload"]["texts_sha256"]
    assert "| window mode, max_length 512 |" in (tmp_path / "long_documents_gpu.md").read_text()
    # Results measured on other texts are refused, and so is a server of another max_length.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**truncate, "workload": {**truncate["workload"], "texts_sha256": "0"}}))
    with pytest.raises(SystemExit, match="not the same texts"):
        gpu_bench.main(["long-report", "--results", str(results["window"]), str(other), "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="serves max_length 512, not 8192"):
        gpu_bench.main([*args, "--max-length", "8192", "--mode", "truncate", "--out", str(other)])
