"""The one-command GPU runbook (scripts/gpu_runbook.sh + scripts/runbook_verdict.py), dry-run: the
commands it would run with device and ports as parameters, and the PASS/FAIL lines it prints from
what a GPU host would have collected (the launcher's metrics as self_certify.metrics_text writes
them, a manifest as the plan build writes it, nvidia-smi and perf_analyzer output)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from export.settings import GPU_MEMORY_BUDGET_BYTES, ServingLimits
from export.tensorrt_build import PlanBuild

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docker"))
import self_certify  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
import runbook_verdict  # noqa: E402


def _verdict(passed: bool, taken: bool) -> dict:
    return {
        "passed": passed and taken,
        "ready": passed and taken,
        "mode": "fail",
        "device": "NVIDIA L4 sm8.9",
        "engines": {
            "cross_encoder": {"taken": True, "detail": ""},
            "cross_encoder_8192": {"taken": taken, "detail": "no engine"},
        },
        "certificate": {
            "passed": passed,
            "pairs": 194,
            "max_abs_logit": 0.02 if passed else 0.4,
            "max_abs_score": 0.003,
            "failures": [] if passed else ["max |d logit| 0.4 > 0.1"],
            "certificate_sha256": "ab" * 32,
        },
    }


def _collected(tmp_path: Path, passed=True, taken=True, used_mib=19_000, rate=400.0) -> list[str]:
    (tmp_path / "m.prom").write_text(self_certify.metrics_text(_verdict(passed, taken)))
    memory = [c.to_dict() for c in PlanBuild(ServingLimits(max_length=8192)).estimate()]
    (tmp_path / "manifest.json").write_text(json.dumps({"tensorrt_plan": {"memory_estimate": memory}}))
    (tmp_path / "smi.csv").write_text(f"{used_mib} MiB\n")
    (tmp_path / "perf.csv").write_text(f"Concurrency,Inferences/Second,p99 latency\n4,{rate},1000\n")
    args = ["--metrics", "m.prom", "--manifest", "manifest.json", "--nvidia-smi", "smi.csv", "--perf", "perf.csv"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "runbook_verdict.py"), *args, "--min-pairs-per-s", "100"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == (0 if all(x.startswith("PASS") for x in lines) else 1)
    return lines


def test_runbook_prints_a_pass_line_for_each_check(tmp_path):
    lines = _collected(tmp_path, rate=12.5 * 16)  # perf_analyzer's -b 16 rate is already pairs/s
    heads = [x.split(":")[0] for x in lines]
    assert heads == [
        "PASS engine taken",
        "PASS certificate",
        "PASS memory cross_encoder",
        "PASS memory cross_encoder_2048",
        "PASS memory cross_encoder_8192",
        "PASS memory total",
        "PASS throughput",
    ]
    assert "2/2 class models" in lines[0] and "NVIDIA L4" in lines[1] and "200 pairs/s" in lines[-1]


@pytest.mark.parametrize(
    "kwargs, failing",
    [
        ({"taken": False}, "FAIL engine taken"),
        ({"passed": False}, "FAIL certificate"),
        ({"used_mib": 23_000}, "FAIL memory total"),
        ({"rate": 99.0}, "FAIL throughput"),
    ],
)
def test_runbook_fails_the_check_that_failed(tmp_path, kwargs, failing):
    lines = _collected(tmp_path, **kwargs)
    assert [x for x in lines if x.startswith("FAIL")] == [next(x for x in lines if x.startswith(failing))]


def test_runbook_without_a_verdict_fails_every_line_it_cannot_read(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "runbook_verdict.py"),
            "--metrics",
            "x",
            "--manifest",
            "x",
            "--nvidia-smi",
            "x",
            "--perf",
            "x",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and out.stdout.count("FAIL") == 4


def test_runbook_budget_is_the_exporters():
    assert runbook_verdict.DEFAULT_BUDGET_BYTES == GPU_MEMORY_BUDGET_BYTES


CHART_VALUES = ROOT / "deploy" / "helm" / "bge-reranker" / "values.yaml"


def _dry_run(tmp_path: Path, **env: str) -> str:
    env = {"DRY_RUN": "1", "OUT": str(tmp_path / "rb"), "MODEL": str(tmp_path), **env}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_runbook.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _chart_default() -> tuple[str, str, int]:
    served = yaml.safe_load(CHART_VALUES.read_text())["served"]
    return served["backend"], served["precision"], served["maxLength"]


def test_runbook_dry_run_takes_device_and_ports_and_uses_the_images_launcher(tmp_path):
    out = _dry_run(
        tmp_path, GPU="device=3", HTTP_PORT="18000", GRPC_PORT="18001", METRICS_PORT="18002", CERT_PORT="18003"
    )
    assert out.count("--gpus device=3") == 2 and "--id=3" in out  # export, serve, nvidia-smi on that GPU
    for inside, host in ((8000, 18000), (8001, 18001), (8002, 18002), (8003, 18003)):
        assert f"-p 127.0.0.1:{host}:{inside}" in out
    serve = next(x for x in out.splitlines() if " run -d " in x)
    assert serve.rstrip().endswith("bge-reranker-triton:0.1.0")  # the image's own command: serve.py
    assert "curl -fs http://localhost:18003/metrics" in out and "-u localhost:18001" in out
    assert "runbook_verdict.py" in out


def test_runbook_default_is_what_the_chart_deploys_by_default(tmp_path):
    """One pass, at the chart's `served:` (onnxruntime fp16 512 today: the ONNX Runtime TensorRT
    EP's engine-file check, build-once pass and graph level 2 in serve.py); the plan path only
    with PLAN=1, as a second pass."""
    backend, precision, length = _chart_default()
    out = _dry_run(tmp_path)
    exports = [x for x in out.splitlines() if "bge-reranker-exporter:0.1.0 --model" in x]
    assert len(exports) == 1 and f"--backend {backend} --precision {precision} --max-length {length} " in exports[0]
    assert f"-m export.plan_memory --host {backend} --max-length {length} --bytes" in out
    assert out.count("runbook_verdict.py") == 1 and "--backend tensorrt" not in out


def test_runbook_plan_pass_runs_after_the_charts_default(tmp_path):
    backend, precision, length = _chart_default()
    out = _dry_run(tmp_path, PLAN="1", PLAN_MAX_LENGTH="4096")
    exports = [x for x in out.splitlines() if "bge-reranker-exporter:0.1.0 --model" in x]
    assert [f"--backend {backend} --precision {precision} --max-length {length} " in exports[0]] == [True]
    assert "--backend tensorrt --precision fp16 --max-length 4096 " in exports[1] and len(exports) == 2
    assert out.count("runbook_verdict.py") == 2
    assert f"rb/{backend}-{precision}-{length}/" in out and "rb/tensorrt-fp16-4096/" in out


def test_runbook_pulls_perf_analyzers_image_before_anything_is_timed(tmp_path):
    """A first pull of the multi-GB SDK image inside `timeout ... docker run` ate the timeout."""
    lines = _dry_run(tmp_path).splitlines()
    sdk = "nvcr.io/nvidia/tritonserver:24.10-py3-sdk"
    pull = lines.index(f"+ docker pull {sdk}")
    assert pull < min(i for i, x in enumerate(lines) if " run " in x)
    timed = [x for x in lines if x.startswith("+ timeout ")]
    assert timed and all(sdk in x for x in timed)


def test_runbook_keeps_a_hub_download_in_a_persistent_cache(tmp_path):
    """A Hub id is fetched by the exporter at run time: into HF_CACHE (the image's HF_HOME), so a
    second pass or run reuses it; a local folder is mounted instead and nothing is fetched."""
    hub = _dry_run(tmp_path, MODEL="BAAI/bge-reranker-v2-m3", HF_CACHE=str(tmp_path / "hf"), PLAN="1")
    exports = [x for x in hub.splitlines() if "bge-reranker-exporter:0.1.0 --model" in x]
    assert len(exports) == 2 and all(f"-v {tmp_path / 'hf'}:/tmp/huggingface " in x for x in exports)
    assert "/tmp/huggingface" not in _dry_run(tmp_path)
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "HF_HOME=/tmp/huggingface" in dockerfile[dockerfile.index("AS exporter") :]


@pytest.mark.parametrize("peak_gib, head", [(12.0, "PASS host memory"), (16.5, "PASS host memory"), (19.0, "FAIL")])
def test_runbook_compares_the_containers_peak_with_the_derived_pod_limit(tmp_path, peak_gib, head):
    """The host-memory line: the container's measured peak against the limit the chart's values are
    derived from (export/plan_memory.py, written by `--bytes`); over the estimate but inside the
    limit passes and says the headroom is being used."""
    from export import plan_memory

    subprocess.run(
        [sys.executable, "-m", "export.plan_memory", "--host", "onnxruntime", "--max-length", "8192", "--bytes"]
        + ["--out", str(tmp_path / "need.txt")],
        cwd=ROOT,
        check=True,
    )
    pod = plan_memory.served_pod_memory("onnxruntime", 8192)
    assert (tmp_path / "need.txt").read_text().split() == [str(pod.host.peak_bytes), str(pod.limit_bytes)]
    (tmp_path / "peak.txt").write_text(f"{int(peak_gib * 2**30)}\n")
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "runbook_verdict.py"), "--metrics", "x", "--manifest", "x"]
        + ["--nvidia-smi", "x", "--perf", "x", "--host-peak", "peak.txt", "--host-need", "need.txt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    [host] = [x for x in out if "host memory" in x]
    assert host.startswith(head) and "pod limit 18 GiB" in host, host
    assert ("over the estimate" in host) == (peak_gib * 2**30 > pod.host.peak_bytes)


def test_runbook_dry_run_collects_the_host_peak_and_the_derived_need(tmp_path):
    out = _dry_run(tmp_path, BACKEND="tensorrt", MAX_LENGTH="2048")
    assert "sh -s -- sample < scripts/lib/memory_peak.sh &" in out  # sampler started with the server
    assert "sh -s -- peak < scripts/lib/memory_peak.sh" in out
    assert "-m export.plan_memory --host tensorrt --max-length 2048 --bytes" in out
    assert "--host-peak" in out and "--host-need" in out


def _memory_peak(mode: str, cgroup: Path, **env: str) -> subprocess.CompletedProcess:
    script = (ROOT / "scripts" / "lib" / "memory_peak.sh").read_text()
    env = {**os.environ, "CGROUP": str(cgroup), "SAMPLED": str(cgroup / "sampled"), **env}
    return subprocess.run(["sh", "-s", "--", mode], input=script, capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"memory.peak": "7", "memory.current": "3", "sampled": "5"}, "7"),  # cgroup v2, kernel >= 5.19
        ({"memory/memory.max_usage_in_bytes": "6", "sampled": "5"}, "6"),  # cgroup v1
        ({"memory.current": "3", "sampled": "5"}, "5"),  # cgroup v2 on 5.15 (Ubuntu 22.04): sampled
    ],
)
def test_host_peak_falls_back_to_the_sampled_peak(tmp_path, files, expected):
    for name, value in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(value + "\n")
    proc = _memory_peak("peak", tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == expected, proc.stderr


def test_host_peak_without_any_source_fails_naming_them(tmp_path):
    proc = _memory_peak("peak", tmp_path)
    assert proc.returncode == 1 and "memory.peak" in proc.stderr and "sampled" in proc.stderr


def test_the_sampler_keeps_the_largest_memory_current(tmp_path):
    """memory.current rises then falls between samples: the sampled file keeps the maximum
    (one sample per call here, so the sequence is exact; the runbook samples every second)."""
    seen = []
    for value in ("100", "900", "300"):
        (tmp_path / "memory.current").write_text(value + "\n")
        assert _memory_peak("sample", tmp_path, SAMPLES="1").returncode == 0
        seen.append((tmp_path / "sampled").read_text().strip())
    assert seen == ["100", "900", "900"]
    assert _memory_peak("peak", tmp_path).stdout.strip() == "900"
