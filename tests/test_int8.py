"""The int8 CPU profile (issue 31, docs/CPU.md): configs, deployment values, the certificate's
int8 bounds as the verifier and self-certification apply them, and the export's int8 gate refusing
a bad quantization (real optimum quantizer, real ONNX Runtime, real gate code)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from tritonclient.grpc import model_config_pb2 as mc

from export import cpu_isa, int8_quantization, settings
from export.pipeline import ExportArgs, ExportContext, ParityFailed, stage_int8
from export.triton_config import RepositorySpec, all_configs, cross_encoder_config, ort_graph_level
from reranker_client.certificate import compare, load_fixture, served_precision

ROOT = Path(__file__).resolve().parent.parent


def test_cpu_int8_configs():
    cpu = cross_encoder_config(RepositorySpec(backend="onnxruntime", precision="int8"))
    assert cpu.backend == "onnxruntime" and cpu.default_model_filename == "model.onnx"
    [group] = cpu.instance_group
    assert group.kind == mc.ModelInstanceGroup.KIND_CPU and group.count == settings.CROSS_ENCODER_INSTANCES
    # No TensorRT accelerator, and ONNX Runtime's full graph optimizations (the int8 fusions).
    assert not cpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert ort_graph_level(cpu) == "ORT_ENABLE_ALL"
    threads = int(cpu.parameters["intra_op_thread_count"].string_value)
    assert threads == settings.CPU_MODEL_INTRA_OP_THREADS
    # Threads sized from the pod: every instance's threads plus the stubs' share fill its CPUs.
    assert group.count * threads + settings.CPU_POD_STUB_CPUS == settings.CPU_POD_CPUS
    python = cross_encoder_config(RepositorySpec(backend="python", precision="int8"))
    assert python.backend == "python" and python.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    # The rest of the repository is unchanged by the precision.
    gpu = all_configs(RepositorySpec())
    assert {k: v for k, v in all_configs(RepositorySpec(precision="int8")).items() if "cross_encoder" not in k} == {
        k: v for k, v in gpu.items() if "cross_encoder" not in k
    }
    with pytest.raises(ValueError, match="CPU profile"):
        RepositorySpec(backend="tensorrt", precision="int8")


def test_cpu_chart_and_compose_values(rendered):
    [deployment] = [
        o for o in rendered["cpu"] if o["kind"] == "Deployment" and o["metadata"]["name"] == "rr-bge-reranker"
    ]
    pod = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert list(containers) == ["triton", "proxy"]  # the front proxy: the chart's default (issue 26)
    triton = containers["triton"]
    requests, limits = triton["resources"]["requests"], triton["resources"]["limits"]
    # Guaranteed QoS (whole cores under the static CPU manager): every container, the proxy too.
    for container in containers.values():
        resources = container["resources"]
        for key in ("cpu", "memory"):
            assert resources["requests"][key] == resources["limits"][key], (container["name"], key)
    assert "nvidia.com/gpu" not in requests and "nvidia.com/gpu" not in limits
    assert not any("gpu" in str(t) for t in pod.get("tolerations", []))
    assert requests["cpu"] == limits["cpu"] == str(settings.CPU_POD_CPUS)
    assert "--self-certify=fail" in triton["args"]  # the certificate's int8 bounds on this pod's CPU
    # No TensorRT engine cache on a CPU pod: no volume, no mount, serve.py told there is none.
    assert "--local=none" in triton["args"] and not any(a.startswith("--local-size") for a in triton["args"])
    assert not any("trt-cache" in v["name"] for v in pod["volumes"])
    assert not any("trt-cache" in m["name"] for m in triton["volumeMounts"])
    compose = yaml.safe_load((ROOT / "docker/compose.cpu.yaml").read_text())
    service = compose["services"]["triton"]
    assert "deploy" not in service and service["cpus"] == settings.CPU_POD_CPUS
    # The header's arithmetic says the same number (review of issue 31: it said 8 while cpus was 6).
    assert f"CPU_POD_STUB_CPUS = {settings.CPU_POD_CPUS})" in (ROOT / "docker/compose.cpu.yaml").read_text()
    assert compose["services"]["proxy"]["depends_on"] == {"triton": {"condition": "service_healthy"}}
    assert "--local=none" in service["command"] and not any("trt-cache" in a for a in service["command"])
    assert [a for a in service["command"] if a.startswith(("--exit-timeout-secs", "--backend-config"))] == (
        settings.server_flags()
    )


def test_serve_runs_without_an_engine_cache(tmp_path, monkeypatch):
    """serve.py --local=none (the CPU profile): nothing prepared, seeded or marked; a shared cache
    cannot go with it."""
    import sys

    monkeypatch.syspath_prepend(str(ROOT / "docker"))
    import serve

    args = serve.build_parser().parse_args(["--local=none", f"--repository={tmp_path}"])
    assert args.local is None
    launcher = serve.Launcher(args, ["tritonserver"], None)
    monkeypatch.chdir(tmp_path)
    launcher.seed(None, None)  # with a cache dir this would create and clean it
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit):
        serve.main(["--local=none", f"--shared={tmp_path}", "--", "tritonserver"])
    assert serve.build_parser().parse_args([]).local == Path("/trt-cache")  # the GPU pods' default
    del sys.modules["serve"]


def test_make_admits_int8():
    def check(precision: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", "-s", "check-vars", f"PRECISION={precision}"], cwd=ROOT, capture_output=True, text=True
        )

    assert check("int8").returncode == 0
    refused = check("int4")
    assert refused.returncode != 0 and "fp16, fp32 or int8" in refused.stderr


def test_verifier_applies_the_int8_bounds(python_repo, tmp_path):
    """make verify and the startup self-certification (both reranker_client.verify) judge an int8
    repository by the certificate's int8 thresholds: what passes int8 fails fp16, and an error
    beyond the int8 bound fails."""
    fixture = load_fixture(python_repo)
    fixture["served"] = {**fixture["served"], "precision": "int8"}
    assert served_precision(fixture) == "int8"
    bounds = fixture["thresholds"]["int8"]
    n = len(fixture["pairs"])
    reference = np.array([p["logit"] for p in fixture["pairs"]] + fixture["ranking"]["logits"])
    # A uniform shift keeps every ranking and moves logits by 0.8 of the int8 bound.
    shifted = reference + 0.8 * bounds["max_abs_logit"]
    within = compare(fixture, shifted[:n], shifted[n:], served_precision(fixture))
    assert within.passed or within.failures == [f for f in within.failures if "score" in f]
    assert not compare(fixture, shifted[:n], shifted[n:], "fp16").passed
    beyond = reference + 1.5 * bounds["max_abs_logit"]
    failed = compare(fixture, beyond[:n], beyond[n:], "int8")
    assert not failed.passed and any("max |d logit|" in f for f in failed.failures)


BAD_RECIPE = int8_quantization.Recipe(per_channel=False, weights_uint8=True, weights_symmetric=False)


def test_int8_gate_refuses_a_bad_quantization(python_repo, tmp_path, monkeypatch, capsys):
    """The escalation's plumbing on the tiny stand-in: the export's int8 stage quantizes with the
    recipe set (per-tensor uint8 weights) at every rung, gates each try on the held-out
    certificate, refuses with every try listed, records the CPU it gated on, and places nothing.
    Not evidence that the gate tells bad from good: on this random-weight model the shipped recipe
    is refused too (docs/CPU.md). That is tests/test_int8_gate.py's decisive test, on the trained
    stand-in with a real reranker's logit spread."""
    monkeypatch.setattr(int8_quantization, "INT8_RECIPE", BAD_RECIPE)
    fp32 = python_repo / "cross_encoder" / "1" / "model.onnx"  # the python backend serves the fp32 graph
    args = ExportArgs(model="tiny", repo=tmp_path / "repo", backend="python", precision="int8")
    ctx = ExportContext(args=args, spec=RepositorySpec(backend="python", precision="int8"), work=tmp_path)
    ctx.fp32_path = fp32
    ctx.fixture = json.loads((python_repo / "certificate.json").read_text())
    ctx.model_facts = {"layers": 1 + max(layer for _, layer in _weight_matmuls(fp32))}
    with pytest.raises(ParityFailed) as refused:
        stage_int8(ctx)
    message = str(refused.value)
    assert message.startswith("parity gate (int8) failed")
    assert "max |d logit|" in message and "--precision fp32 exports without int8" in message
    # Every rung was tried, in order, each one gated.
    assert [a["rung"] for a in ctx.int8_attempts] == [r.name for r in int8_quantization.INT8_ESCALATION]
    assert all(not a["passed"] for a in ctx.int8_attempts)
    assert ctx.reports["int8"].served == "served" and not ctx.reports["int8"].passed
    # The recipe really reached the quantizer: per-tensor (one scale) uint8 weights in the graph tried last.
    graph = onnx.load(str(tmp_path / "int8" / "model.onnx"))
    weights = {i.name: i for i in graph.graph.initializer}
    quantized = [name[: -len("_quantized")] for name in weights if name.endswith("_quantized")]
    assert quantized and all(weights[f"{w}_quantized"].data_type == onnx.TensorProto.UINT8 for w in quantized)
    assert all(int(np.prod(weights[f"{w}_scale"].dims)) == 1 for w in quantized)
    assert not args.repo.exists()  # nothing placed
    gate_cpu = ctx.fixture["served"]["int8_gate_cpu"]  # the ISA the numbers were taken on
    assert gate_cpu["mlas_u8s8_kernel"] == cpu_isa.mlas_u8s8_kernel(cpu_isa.cpu_flags())
    assert gate_cpu["int8_flags"] == cpu_isa.cpu_flags()
    # uint8 weights (this recipe's) run the u8u8 GEMM: the kernel that ran is named as such.
    assert gate_cpu["int8_weights"] == "uint8"
    assert gate_cpu["mlas_kernel_run"] == cpu_isa.mlas_u8u8_kernel(cpu_isa.cpu_flags())
    # ... and the chart's int8NodeFeatures that pin CPU pods to nodes running that kernel.
    assert gate_cpu["int8_node_features"] == cpu_isa.node_features(cpu_isa.cpu_flags(), weights_uint8=True)
    assert "parity int8: FAIL" in capsys.readouterr().out


def _weight_matmuls(path: Path) -> list[tuple[str, int]]:
    return int8_quantization.weight_matmuls(onnx.load(str(path), load_external_data=False))


@pytest.mark.slow
def test_make_serve_serves_an_int8_graph_and_certifies_it_with_the_int8_bounds(python_repo, tmp_path):
    """The Python backend serves the int8 graph (the certificate's rows come back as logits), and
    `make serve`'s self-certification judges it by the certificate's int8 bounds. On the random-weight
    tiny stand-in int8 misses them (docs/CPU.md), so the launcher must say NOT READY - the graph is
    placed here by hand, as an operator bypassing the export's gate would."""
    import signal
    import sys
    import threading

    from local_triton.server import free_port

    repo = tmp_path / "repo"
    shutil.copytree(python_repo, repo)
    served = repo / "cross_encoder" / "1" / "model.onnx"
    layers = 1 + max(layer for _, layer in _weight_matmuls(served))
    int8_quantization.quantize_int8(
        served, tmp_path / "int8" / "model.onnx", layers, int8_quantization.INT8_ESCALATION[0]
    )
    shutil.copy2(tmp_path / "int8" / "model.onnx", served)
    cert = json.loads((repo / "certificate.json").read_text())
    cert["served"]["precision"] = "int8"
    (repo / "certificate.json").write_text(json.dumps(cert))
    verdict = tmp_path / "verdict.json"
    ports = [str(free_port()) for _ in range(3)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "local_triton.server", str(repo), "--http-port", ports[0], "--grpc-port", ports[1]]
        + ["--metrics-port", ports[2], f"--verdict={verdict}", "--probe-period=1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    stopper = threading.Timer(240, proc.kill)
    stopper.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[self-certify]"):
                break
        assert lines and lines[-1].startswith("[self-certify] FAIL (fail; NOT READY) device cpu"), "".join(lines)[
            -3000:
        ]
        doc = json.loads(verdict.read_text())
        certificate = doc["certificate"]
        assert certificate["precision"] == "int8" and not doc["ready"]
        assert certificate["pairs"] == len(cert["pairs"]) + len(cert["ranking"]["logits"])  # every row answered
        assert (
            np.isfinite(certificate["max_abs_logit"])
            and certificate["max_abs_logit"] > cert["thresholds"]["int8"]["max_abs_logit"]
        )
        assert any("> 0.5" in f for f in certificate["failures"])
    finally:
        stopper.cancel()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_int8_export_serve_verify_on_the_trained_standin(tmp_path):
    """The Makefile path a CPU user takes, on the stand-in that is trained (common/trained_standin.py,
    built once into runs/trained-model by `make standin-trained`): `make export PRECISION=int8` passes
    the int8 gate at some rung and writes an int8 repository, `make serve` serves it on the real local
    tritonserver and its self-certification says READY by the certificate's int8 bounds, and
    `make verify` certifies the live server. On the random-weight stand-ins the same export is refused
    (test_int8_gate_refuses_a_bad_quantization, docs/CPU.md): the model, not the gate, differs."""
    import os
    import signal
    import threading

    from local_triton.server import free_port

    make = ["make", "-s", "-o", ".venv/.installed"]
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "REPO", "BACKEND", "PRECISION", "MAX_LENGTH")}
    built = subprocess.run(make + ["standin-trained"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    model = ROOT / "runs" / "trained-model"
    repo = tmp_path / "repo"
    export = subprocess.run(
        make + ["export", f"MODEL={model}", f"REPO={repo}", "BACKEND=python", "PRECISION=int8"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert export.returncode == 0, export.stdout[-4000:] + export.stderr[-2000:]
    manifest = json.loads((repo / "manifest.json").read_text())
    attempts = manifest["int8"]["attempts"]
    assert attempts[-1]["passed"] and not any(a["passed"] for a in attempts[:-1])
    bounds = json.loads((repo / "certificate.json").read_text())["thresholds"]["int8"]
    assert attempts[-1]["max_abs_logit"] <= bounds["max_abs_logit"]
    # Certified on the worst batch composition the server can form (issue 31), recorded per composition.
    assert attempts[-1]["worst_composition"] in attempts[-1]["compositions"]
    assert all(c["passed"] for c in attempts[-1]["compositions"].values())
    assert json.loads((repo / "certificate.json").read_text())["served"]["precision"] == "int8"
    served = onnx.load(str(repo / "cross_encoder" / "1" / "model.onnx"))
    # The weights' type follows this CPU's int8 kernel (uint8 without VNNI: export/int8_quantization.recipe_for).
    weights = onnx.TensorProto.UINT8 if int8_quantization.shipped_recipe().weights_uint8 else onnx.TensorProto.INT8
    assert any(i.name.endswith("_quantized") and i.data_type == weights for i in served.graph.initializer)
    assert manifest["int8"]["gate_cpu"]["mlas_u8s8_kernel"] == cpu_isa.mlas_u8s8_kernel(cpu_isa.cpu_flags())
    print(f"\nint8 on the trained stand-in: {json.dumps(attempts)}")

    http, grpc, metrics = (free_port() for _ in range(3))
    ports = [f"HTTP_PORT={http}", f"GRPC_PORT={grpc}", f"METRICS_PORT={metrics}"]
    serve = subprocess.Popen(
        make + ["serve", f"REPO={repo}", *ports],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # make, the launcher and tritonserver: stopped together below
    )
    lines: list[str] = []
    stopper = threading.Timer(300, lambda: os.killpg(serve.pid, signal.SIGKILL))
    stopper.start()
    try:
        assert serve.stdout is not None
        for line in serve.stdout:
            lines.append(line)
            if line.startswith("ready:") or line.startswith("NOT READY"):
                break
        certified = [line for line in lines if line.startswith("[self-certify]")]
        assert certified and certified[-1].startswith("[self-certify] PASS (fail; ready) device cpu"), "".join(lines)[
            -3000:
        ]
        assert lines[-1].startswith("ready: model `rerank` is serving")
        report = tmp_path / "verify.json"
        verify = subprocess.run(
            make + ["verify", f"URL=127.0.0.1:{grpc}", f"REPO={repo}", f"REPORT={report}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
        doc = json.loads(report.read_text())
        assert doc["passed"] and doc["served"]["precision"] == "int8"
        assert doc["max_abs_logit"] <= bounds["max_abs_logit"] and doc["kendall_tau"] >= bounds["min_kendall_tau"]
        print(f"verify: max |d logit| {doc['max_abs_logit']:.4g}, max |d score| {doc['max_abs_score']:.4g}")
    finally:
        stopper.cancel()
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()


def test_the_int8_benchmark_retrains_a_trained_standin_whose_weights_are_not_the_pinned_ones(tmp_path, monkeypatch):
    """benchmarks.int8_vs_fp32 --shape trained reuses runs/int8_bench/model_trained: weights from an
    older recipe (not trained_standin.SHA256) are trained again, and the graphs made from them go."""
    from benchmarks import int8_vs_fp32
    from common import trained_standin

    model_dir = tmp_path / "model_trained"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"weights of an older recipe")
    stale_graphs = [tmp_path / "fp32_trained", tmp_path / "int8_trained_u8u8_per_channel_rung3"]
    for folder in stale_graphs:
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"graph of the older weights")
    built = []

    class Built(Exception):
        pass

    def build(out_dir, *args, **kwargs):
        built.append(out_dir)
        raise Built

    monkeypatch.setattr(trained_standin, "build", build)
    with pytest.raises(Built):
        int8_vs_fp32.prepare(int8_vs_fp32.TRAINED, tmp_path, 512, rung=3)
    assert built == [model_dir]
    assert not any(folder.exists() for folder in stale_graphs)
