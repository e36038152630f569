"""Every pod certifies itself (issue 25, items 2 and 3): docker/self_certify.py, run by the image
launcher (docker/serve.py) and `make serve`, read by readiness (docker/probe.py --verdict).

On CPU for real: the launcher around the real local tritonserver, a certificate whose logit was
edited (the engine answers other logits than its certificate) -> never ready, metric says why;
the same server against the true certificate -> pass; `warn` -> ready despite a failure. The
TensorRT engine check runs on the configs our generator writes (no TensorRT here: a dry run).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from argparse import Namespace
from pathlib import Path

import pytest
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from export.triton_config import LONG_CONTEXT_REFERENCE, RepositorySpec, cross_encoder_config, length_classes
from local_triton.server import TritonServer, free_port
from tests.server_helpers import start_launcher, wait_while_running

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


selfcert = _load("self_certify_under_test", ROOT / "docker" / "self_certify.py")
probe = _load("probe_under_test", ROOT / "docker" / "probe.py")


def triton_json(config) -> dict:
    """A generated config in the JSON form Triton's /v2/models/<name>/config answers."""
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def metrics(text: str) -> dict[str, list]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


# --- item 2: no silent fallback (dry run on generated configs) --------------------------------


def test_engine_check_names_the_class_model_tensorrt_did_not_take(tmp_path):
    from dataclasses import replace

    spec = replace(LONG_CONTEXT_REFERENCE, engine_cache_prefix="bge_0123456789abcdef")
    configs = {c.model: triton_json(cross_encoder_config(spec, c)) for c in length_classes(spec.limits)}
    assert list(configs) == ["cross_encoder", "cross_encoder_2048", "cross_encoder_8192"]
    # What the EP writes (prefix, graph hash, compute capability): class 0 and class 2 built;
    # class 1 fell back to the CUDA EP. Class 0's prefix is a prefix of the others' names.
    (tmp_path / "bge_0123456789abcdef_3771293021915235127_0_sm89.engine").write_bytes(b"e")
    (tmp_path / "bge_0123456789abcdef_3771293021915235127_0_sm89.profile").write_bytes(b"p")
    (tmp_path / "bge_0123456789abcdef_c2_3771293021915235127_0_sm89.engine").write_bytes(b"e")
    checks = selfcert.engine_checks(configs, tmp_path)
    assert {m: c["taken"] for m, c in checks.items()} == {
        "cross_encoder": True,
        "cross_encoder_2048": False,
        "cross_encoder_8192": True,
    }
    assert "TensorRT did not take cross_encoder_2048" in checks["cross_encoder_2048"]["detail"]
    assert "bge_0123456789abcdef_c1_*.engine" in checks["cross_encoder_2048"]["detail"]
    # Only another class's engine on disk: class 0 is not credited with it.
    (tmp_path / "bge_0123456789abcdef_3771293021915235127_0_sm89.engine").unlink()
    assert not selfcert.engine_checks(configs, tmp_path)["cross_encoder"]["taken"]


def test_engine_check_plans_need_their_profile_and_cpu_models_are_not_checked():
    plans = {
        c.model: triton_json(cross_encoder_config(RepositorySpec(backend="tensorrt"), c))
        for c in length_classes(RepositorySpec().limits)
    }
    checks = selfcert.engine_checks(plans)
    assert checks == {"cross_encoder": {"taken": True, "detail": "plan loaded with profile 0"}}
    del plans["cross_encoder"]["instance_group"][0]["profile"]
    assert "without an instance_group profile" in selfcert.engine_checks(plans)["cross_encoder"]["detail"]
    python = {"cross_encoder": triton_json(cross_encoder_config(RepositorySpec(backend="python")))}
    assert selfcert.engine_checks(python) == {}


def test_engine_check_runs_without_a_certificate_and_gates_readiness(tmp_path, capsys):
    """A uri repository with no certificate mounted (--certificate=none): the TensorRT engine
    check still runs and a miss keeps the pod unready; with every engine taken the pod may serve,
    but the verdict is not `passed` (serve.py publishes nothing uncertified), the start says so
    loudly and the metric reranker_selfcert_certificate_missing is 1."""
    from dataclasses import replace

    spec = replace(LONG_CONTEXT_REFERENCE, engine_cache_prefix="bge_0123456789abcdef")
    configs = {c.model: triton_json(cross_encoder_config(spec, c)) for c in length_classes(spec.limits)}
    args = Namespace(**{**vars(_args(None, "127.0.0.1:1", tmp_path / "v.json")), "certificate": "none"})
    certifier = selfcert.SelfCertifier(args, "http://127.0.0.1:1")
    certifier.prepare()
    assert "NO CERTIFICATE" in capsys.readouterr().out
    (tmp_path / "bge_0123456789abcdef_1_0_sm89.engine").write_bytes(b"e")
    (tmp_path / "bge_0123456789abcdef_c2_1_0_sm89.engine").write_bytes(b"e")
    missed = certifier.run(tmp_path, configs)  # class 1 fell back to the CUDA EP
    assert not missed["engines"]["cross_encoder_2048"]["taken"]
    assert not missed["ready"] and not missed["passed"] and missed["certificate"]["missing"]
    assert probe.main(["--url", "http://127.0.0.1:1", "--verdict", str(tmp_path / "v.json")]) == 1
    (tmp_path / "bge_0123456789abcdef_c1_1_0_sm89.engine").write_bytes(b"e")
    taken = certifier.run(tmp_path, configs)
    assert taken["ready"] and not taken["passed"]
    assert "NO CERTIFICATE" in capsys.readouterr().out
    family = metrics(selfcert.metrics_text(taken))
    assert family["reranker_selfcert_certificate_missing"][0].value == 1
    assert family["reranker_selfcert_pass"][0].value == 0
    # The launcher's note for the build lock: nothing published.
    serve = _load("serve_under_test", ROOT / "docker" / "serve.py")

    class Alive:
        def poll(self):
            return None

    assert "nothing published" in serve.build_outcome(Alive(), taken, False, None)
    # Neither --repository nor --certificate: refused at start, not a silent skip.
    bare = selfcert.SelfCertifier(_args(None, "127.0.0.1:1", tmp_path / "w.json"), "http://127.0.0.1:1")
    with pytest.raises(SystemExit, match="--certificate=none"):
        bare.prepare()


AVX2_CPUINFO = "model name\t: AMD EPYC (AVX2 box)\nflags\t\t: fpu sse2 avx2 fma\n"
VNNI_CPUINFO = "model name\t: Xeon (VNNI box)\nflags\t\t: avx2 fma avx512f avx512bw avx512dq avx512vl avx512_vnni\n"


def test_an_int8_certificate_names_the_cpu_kernel_mismatch_where_it_fails(tmp_path):
    """Review of issue 31: a graph exported (and gated) on a VNNI host and served on AVX2 failed its
    self-certification with nothing naming the CPU. The verdict now says which int8 kernel ran here
    and which the export was gated on; a failure puts the mismatch first. A certificate without a
    record (fp32/fp16) gets no CPU note."""
    (tmp_path / "avx2").write_text(AVX2_CPUINFO)
    (tmp_path / "vnni").write_text(VNNI_CPUINFO)
    from export import cpu_isa

    fixture = {"served": {"int8_gate_cpu": cpu_isa.describe(tmp_path / "vnni")}}
    assert selfcert.int8_cpu_check({"served": {}}, tmp_path / "avx2") is None
    same = selfcert.int8_cpu_check(fixture, tmp_path / "vnni")
    assert same["same_kernel"] and selfcert.cpu_mismatch_failure(same) is None
    other = selfcert.int8_cpu_check(fixture, tmp_path / "avx2")
    assert (other["export_kernel"], other["here_kernel"], other["same_kernel"]) == ("Avx512Vnni", "Avx2", False)
    message = selfcert.cpu_mismatch_failure(other)
    assert "Avx2" in message and "Avx512Vnni" in message and "VNNI box" in message
    verdict = {
        "passed": False,
        "ready": False,
        "mode": "fail",
        "device": "cpu",
        "engines": {},
        "certificate": {
            "max_abs_logit": 1.5,
            "max_abs_score": 0.36,
            "pairs": 10,
            "certificate_sha256": "ab" * 32,
            "failures": [message, "max |d score| 0.36 > 0.05"],
            "cpu": other,
        },
    }
    line = selfcert.verdict_line(verdict)
    assert "int8 kernel here Avx2 (export: Avx512Vnni)" in line and line.index("this node's int8 kernel") < line.index(
        "max |d score| 0.36"
    )


def test_the_serving_image_copies_what_self_certify_imports():
    """In the image export/ is absent: self_certify falls back to cpu_isa.py copied beside it."""
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    copy = next(line for line in dockerfile.splitlines() if "docker/self_certify.py" in line)
    assert "export/cpu_isa.py" in copy and copy.rstrip().endswith("/opt/reranker/")


def test_certificate_subset_covers_languages_first_and_keeps_the_ranking_list():
    fixture = {
        "pairs": [{"language": lang, "i": i} for i, lang in enumerate(["en", "en", "de", "fr", "fr", "ja"])],
        "ranking": {"passages": ["x"] * 3},
    }
    subset = selfcert.certificate_subset(fixture, 4)
    assert [p["i"] for p in subset["pairs"]] == [0, 2, 3, 5] and subset["ranking"] is fixture["ranking"]
    assert [p["i"] for p in selfcert.certificate_subset(fixture, 5)["pairs"]] == [0, 1, 2, 3, 5]
    assert selfcert.certificate_subset(fixture, 0) is fixture


def test_probe_reads_the_verdict(tmp_path):
    verdict = tmp_path / "v.json"
    assert probe.certified(str(verdict)) == (False, f"self-certification pending: no verdict at {verdict} yet")
    verdict.write_text(json.dumps({"ready": True, "passed": False}))
    assert probe.certified(str(verdict))[0]
    verdict.write_text(
        json.dumps(
            {
                "ready": False,
                "engines": {"cross_encoder": {"taken": False, "detail": "no engine"}},
                "certificate": {"failures": ["max |d logit| 1 > 0.1"]},
            }
        )
    )
    assert probe.certified(str(verdict)) == (
        False,
        "self-certification FAILED: cross_encoder: no engine; max |d logit| 1 > 0.1",
    )


# --- item 3: for real on CPU ------------------------------------------------------------------


def _args(repo: Path, grpc_url: str, verdict: Path, mode: str = "fail", metrics_port: int = 0) -> Namespace:
    return Namespace(
        self_certify=mode,
        repository=repo,
        grpc_url=grpc_url,
        certify_pairs=8,
        certify_timeout=120.0,
        verdict=verdict,
        certify_metrics_port=metrics_port,
        certify_metrics_address="127.0.0.1",
    )


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_launcher_certifies_its_engine_and_stays_unready_on_a_mismatch(python_repo, tmp_path):
    # A repository whose engine answers other logits than its certificate: one pair's recorded
    # logit moved by 1.0 (the engine is right, the certificate disagrees: the same verdict).
    repo = tmp_path / "repo"
    shutil.copytree(python_repo, repo)
    cert = json.loads((repo / "certificate.json").read_text())
    true_cert = (python_repo / "certificate.json").read_bytes()
    cert["pairs"][0]["logit"] += 1.0
    (repo / "certificate.json").write_text(json.dumps(cert))
    verdict, local = tmp_path / "verdict.json", tmp_path / "trt-cache"
    verdict.write_text(json.dumps({"ready": True, "passed": True}))  # left by an earlier container
    server = TritonServer(repo, free_port(), free_port(), free_port())
    metrics_port = free_port()
    url = f"http://127.0.0.1:{server.http_port}"
    proc = start_launcher(
        server,
        f"--local={local}",
        f"--ready-url={url}/v2/health/ready",
        f"--shm-dir={tmp_path / 'shm'}",
        "--self-certify=fail",
        f"--repository={repo}",
        f"--grpc-url=127.0.0.1:{server.grpc_port}",
        "--certify-pairs=8",
        f"--verdict={verdict}",
        f"--certify-metrics-port={metrics_port}",
        "--certify-metrics-address=127.0.0.1",
    )
    try:
        wait_while_running(proc, lambda: bool((selfcert.read_verdict(verdict) or {}).get("at")))
        doc = selfcert.read_verdict(verdict)
        assert not doc["passed"] and not doc["ready"] and doc["mode"] == "fail"
        assert doc["device"] == "cpu" and doc["engines"] == {}  # python backend: no TensorRT to check
        assert doc["certificate"]["max_abs_logit"] > 0.99 and doc["certificate"]["pairs"] == 8 + 100
        assert any("max |d logit|" in f for f in doc["certificate"]["failures"])
        # Unready: the readiness probe says why; Triton itself is up and answers.
        assert server.is_ready() and probe.probe(url)[0]
        assert probe.main(["--url", url, "--verdict", str(verdict)]) == 1
        assert not (local / ".complete").exists()  # a failed engine is not marked complete
        family = metrics(_scrape(metrics_port))
        [sample] = family["reranker_selfcert_pass"]
        assert sample.value == 0 and sample.labels["device"] == "cpu"
        assert (
            sample.labels["certificate_sha256"] == hashlib.sha256((repo / "certificate.json").read_bytes()).hexdigest()
        )
        assert family["reranker_selfcert_max_abs_logit"][0].value > 0.99
        assert family["reranker_selfcert_ready"][0].value == 0

        # The same server against its true certificate passes; in `warn` mode a failure still
        # lets the pod become ready.
        good = tmp_path / "good"
        good.mkdir()
        (good / "certificate.json").write_bytes(true_cert)
        certifier = selfcert.SelfCertifier(_args(good, f"127.0.0.1:{server.grpc_port}", tmp_path / "good.json"), url)
        passed = certifier.run()
        assert passed["passed"] and passed["ready"] and passed["certificate"]["max_abs_logit"] < 1e-3
        assert probe.main(["--url", url, "--verdict", str(tmp_path / "good.json")]) == 0
        warn = selfcert.SelfCertifier(_args(repo, f"127.0.0.1:{server.grpc_port}", tmp_path / "warn.json", "warn"), url)
        warned = warn.run()
        assert not warned["passed"] and warned["ready"]
        assert probe.main(["--url", url, "--verdict", str(tmp_path / "warn.json")]) == 0
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert "[self-certify] FAIL (fail; NOT READY) device cpu" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_chart_turns_self_certification_on_and_only_readiness_reads_it(rendered):
    """On the rendered chart (the template loops over the probes): every pod and prebuild Job
    certifies, whatever the repository source; the readiness probe requires the verdict,
    liveness does not (a failed certificate keeps the pod unready, not restarting). A remote
    (uri) repository gets its certificate from helmTest.certificateConfigMap, mounted where
    --certificate points; without one, --certificate=none (the engine check still gates)."""
    checked, uri = 0, set()
    for variant, objects in rendered.items():
        for obj in objects:
            if obj.get("kind") not in ("Deployment", "Job"):
                continue
            pod = obj["spec"]["template"]["spec"]
            launchers = [c for c in pod["containers"] if "/opt/reranker/serve.py" in c.get("args", [])]
            if not launchers:
                continue
            [triton] = launchers
            args = triton["args"]
            assert "--self-certify=fail" in args and f"--verdict={selfcert.DEFAULT_VERDICT}" in args, variant
            sources = [a for a in args if a.startswith(("--repository=", "--certificate="))]
            assert len(sources) == 1, (variant, sources)
            if any(a.startswith("--model-repository=") and "://" in a for a in args):
                uri.add(variant)
                configmap = next((v["configMap"]["name"] for v in pod["volumes"] if v["name"] == "certificate"), None)
                if configmap:
                    assert sources == ["--certificate=/certificate/certificate.json"], variant
                    assert {"name": "certificate", "mountPath": "/certificate", "readOnly": True} in triton[
                        "volumeMounts"
                    ]
                else:
                    assert sources == ["--certificate=none"], variant
            else:
                assert sources == ["--repository=/models"], variant
            if obj["kind"] == "Deployment":
                readiness = " ".join(triton["readinessProbe"]["exec"]["command"])
                liveness = " ".join(triton["livenessProbe"]["exec"]["command"])
                assert "--verdict" not in liveness, variant
                assert f"--verdict={selfcert.DEFAULT_VERDICT}" in readiness, variant
            checked += 1
    assert checked >= 5, checked
    assert {"eks", "object-storage", "shared-cache", "aks"} <= uri, uri
    for variant in ("eks", "object-storage"):  # both name helmTest.certificateConfigMap
        pod = next(o for o in rendered[variant] if o["kind"] == "Deployment")["spec"]["template"]["spec"]
        assert {
            "name": "certificate",
            "configMap": {
                "name": "bge-certificate",
                "items": [{"key": "certificate.json", "path": "certificate.json"}],
            },
        } in pod["volumes"], variant


@pytest.mark.parametrize("path", ["docker/compose.yaml", "docker/compose.cpu.yaml", "docker/Dockerfile"])
def test_deployments_turn_self_certification_on_and_readiness_reads_it(path):
    text = (ROOT / path).read_text()
    launcher = text[text.index("/opt/reranker/serve.py") :]
    assert "--self-certify=fail" in launcher and "--repository=/models" in launcher
    assert f"--verdict={selfcert.DEFAULT_VERDICT}" in launcher and "--certify-metrics-port=8003" in launcher
    # Readiness (the chart's readinessProbe, compose's and the image's healthcheck) requires the
    # verdict; the chart's liveness does not (a failed certificate keeps the pod unready, not
    # restarting).
    marker = {"docker/compose.yaml": "healthcheck:", "docker/compose.cpu.yaml": "healthcheck:"}.get(
        path, "HEALTHCHECK" if path == "docker/Dockerfile" else "readinessProbe:"
    )
    readiness = text[text.index(marker) :]
    readiness = readiness[: readiness.index("livenessProbe")] if "livenessProbe" in readiness else readiness
    assert f"--verdict={selfcert.DEFAULT_VERDICT}" in readiness.split("\n\n")[0]
    if "livenessProbe" in text:
        liveness = text[text.index("livenessProbe:") :].split("resources:")[0]
        assert "--verdict" not in liveness


def test_make_serve_certifies_itself_and_says_not_ready(python_repo, tmp_path):
    """`make serve` (local_triton.server) runs the same self-certification after warm-up."""
    repo = tmp_path / "repo"
    shutil.copytree(python_repo, repo)
    cert = json.loads((repo / "certificate.json").read_text())
    cert["ranking"]["logits"][0] -= 2.0
    (repo / "certificate.json").write_text(json.dumps(cert))
    verdict = tmp_path / "verdict.json"
    ports = [str(free_port()) for _ in range(3)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "local_triton.server", str(repo), "--http-port", ports[0], "--grpc-port", ports[1]]
        + ["--metrics-port", ports[2], "--certify-pairs=4", f"--verdict={verdict}", "--probe-period=1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    stopper = threading.Timer(180, proc.kill)  # a launcher that never says UNHEALTHY fails, not hangs
    stopper.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "health probe: UNHEALTHY" in line:
                break
        assert "health probe: UNHEALTHY: self-certification FAILED" in lines[-1], "".join(lines)[-3000:]
        assert any(line.startswith("[self-certify] FAIL (fail; NOT READY) device cpu") for line in lines)
        assert any(line.startswith("NOT READY: self-certification failed") for line in lines)
        assert not selfcert.read_verdict(verdict)["ready"]
    finally:
        stopper.cancel()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_u8u8_certificate_compares_the_u8u8_kernel_not_the_u8s8_one(tmp_path, monkeypatch):
    """Graphs shipped without VNNI have uint8 weights and run MLAS's u8u8 GEMM, whose ladder differs
    (export/cpu_isa.py): AVX-VNNI changes the u8s8 kernel but not the u8u8 one (no mismatch to
    report), AVX-VNNI-INT8 changes the u8u8 dispatch but not the u8s8 kernel (a mismatch to report).
    /proc/cpuinfo never shows AVX-VNNI-INT8 (the real one is read from CPUID): here each file's
    CPUID answer is given."""
    from export import cpu_isa

    (tmp_path / "avx2").write_text(AVX2_CPUINFO)
    (tmp_path / "avxvnni").write_text("model name\t: Alder Lake\nflags\t\t: avx2 fma avx_vnni\n")
    (tmp_path / "vnniint8").write_text("model name\t: Arrow Lake\nflags\t\t: avx2 fma avx_vnni\n")
    monkeypatch.setattr(cpu_isa, "vnni_int8_of", lambda path: path.name == "vnniint8")
    exported = cpu_isa.describe(tmp_path / "avx2")
    fixture = {"served": {"int8_gate_cpu": {**exported, "int8_weights": "uint8", "mlas_kernel_run": "Avx2"}}}
    on_avx_vnni = selfcert.int8_cpu_check(fixture, tmp_path / "avxvnni")
    assert on_avx_vnni["same_kernel"] and on_avx_vnni["here_kernel"] == "Avx2"
    on_vnni_int8 = selfcert.int8_cpu_check(fixture, tmp_path / "vnniint8")
    assert (on_vnni_int8["here_kernel"], on_vnni_int8["same_kernel"]) == ("Avx2Vnni", False)
    assert "Avx2Vnni" in selfcert.cpu_mismatch_failure(on_vnni_int8)


# /proc/cpuinfo as Linux prints it on an AVX-VNNI-INT8 CPU (Sierra Forest; Arrow Lake and Lunar Lake
# alike): `avx_vnni` is there, `avx_vnni_int8` is not. The kernel has no /proc/cpuinfo name for
# CPUID.(EAX=7,ECX=1):EDX[4]: X86_FEATURE_AVX_VNNI_INT8 is a KVM-only feature, defined in
# arch/x86/kvm/reverse_cpuid.h (CPUID_7_1_EDX is one of its kvm_only_cpuid_leafs), not in
# arch/x86/include/asm/cpufeatures.h, whose quoted names are what /proc/cpuinfo prints.
SIERRA_FOREST_CPUINFO = (
    "model name\t: Intel(R) Xeon(R) 6780E\nflags\t\t: fpu sse2 avx avx2 fma avx_vnni movdiri movdir64b serialize\n"
)


def test_a_u8u8_comparison_does_not_claim_the_same_kernel_where_proc_cpuinfo_cannot_tell(tmp_path):
    """Review rv11: MLAS picks MlasGemmU8U8DispatchAvx2Vnni from the CPUID bit (platform.cpp), but
    /proc/cpuinfo never shows it, so reading only /proc/cpuinfo an AVX-VNNI-INT8 node looks like an
    AVX2+AVX-VNNI node whose u8u8 kernel is Avx2: a uint8-weight graph gated on an AVX2 host is then
    said to run the same kernel on it, and the real mismatch is never named. The check must not claim
    the same kernel there (read the CPUID bit, or call the kernel unknown where avx_vnni is set)."""
    (tmp_path / "avx2").write_text(AVX2_CPUINFO)
    (tmp_path / "sierra_forest").write_text(SIERRA_FOREST_CPUINFO)
    from export import cpu_isa

    exported = cpu_isa.describe(tmp_path / "avx2")
    fixture = {"served": {"int8_gate_cpu": {**exported, "int8_weights": "uint8", "mlas_kernel_run": "Avx2"}}}
    check = selfcert.int8_cpu_check(fixture, tmp_path / "sierra_forest")
    assert check["same_kernel"] is not True, check


def test_an_older_certificate_compares_the_kernel_its_recipe_ran(tmp_path, monkeypatch):
    """Review rv11: every certificate that records int8_gate_cpu (since 7135a1d) shipped the recipe
    int8_quantization.recipe_for(mlas_u8s8_kernel) chose - uint8 weights unless the u8s8 kernel was a
    VNNI one - and records the gate host's int8_flags, so an older certificate still says which kernel
    its graph ran. Comparing u8s8's instead names a mismatch where there is none: a u8u8 graph gated on
    AVX2 runs MLAS's Avx2 u8u8 kernel on an AVX-VNNI node too (AVX-VNNI changes only u8s8's)."""
    from export import cpu_isa, int8_quantization

    (tmp_path / "avx2").write_text(AVX2_CPUINFO)
    (tmp_path / "avxvnni").write_text("model name\t: Alder Lake\nflags\t\t: avx2 fma avx_vnni\n")
    monkeypatch.setattr(cpu_isa, "vnni_int8_of", lambda path: False)  # Alder Lake: CPUID says no
    older = {k: v for k, v in cpu_isa.describe(tmp_path / "avx2").items() if k != "mlas_u8u8_kernel"}
    assert int8_quantization.recipe_for(older["mlas_u8s8_kernel"]).weights_uint8  # it shipped u8u8
    check = selfcert.int8_cpu_check({"served": {"int8_gate_cpu": older}}, tmp_path / "avxvnni")
    assert (check["export_kernel"], check["here_kernel"], check["same_kernel"]) == ("Avx2", "Avx2", True), check
